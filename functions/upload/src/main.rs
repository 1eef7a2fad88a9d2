//! Stowage's upload function: deploys (`PUT /{repo}/{path}`) and presigned upload sessions (`/api/uploads`).
//! Under AWS Lambda when `AWS_LAMBDA_RUNTIME_API` is set, otherwise an HTTP server on
//! `STOWAGE_LISTEN`; configured by the environment (see `stowage_api::function`).

fn main() -> std::process::ExitCode {
    stowage_api::function::main(stowage_api::http::Part::Upload)
}
