//! Stowage's download function: downloads (`GET` and `HEAD /{repo}/{path}`): the bytes, or a redirect to a signed URL.
//! Under AWS Lambda when `AWS_LAMBDA_RUNTIME_API` is set, otherwise an HTTP server on
//! `STOWAGE_LISTEN`; configured by the environment (see `stowage_api::function`).

fn main() -> std::process::ExitCode {
    stowage_api::function::main(stowage_api::http::Part::Download)
}
