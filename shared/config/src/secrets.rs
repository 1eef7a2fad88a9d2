//! Secrets by reference. A setting that holds a secret (the database password, the CloudFront
//! private key) may hold the secret itself or say where to fetch it:
//!
//! | reference                         | what is read                                          |
//! |-----------------------------------|-------------------------------------------------------|
//! | `file:/run/secrets/db-password`   | the file's contents (one trailing newline dropped)    |
//! | `secretsmanager:ID`               | the secret string of an AWS Secrets Manager secret    |
//! | `secretsmanager:ID#password`      | one field of a JSON secret (RDS-managed secrets are `{"username","password"}`) |
//! | `ssm:/stowage/cloudfront-key`     | an SSM parameter, decrypted (`SecureString`)          |
//!
//! `ID` is a secret's name or ARN. The AWS clients are built only when a reference needs them,
//! once, from the default credential chain and region (`AWS_ENDPOINT_URL` points them at
//! LocalStack). References are resolved once at start-up, never per request.

use aws_config::BehaviorVersion;
use stowage_core::Error;
use tokio::sync::OnceCell;

/// Resolves secret references; holds the AWS clients once built.
#[derive(Debug, Default)]
pub struct Secrets {
    aws: OnceCell<aws_config::SdkConfig>,
}

/// Where a setting's value comes from.
#[derive(Debug, PartialEq, Eq)]
enum Reference<'a> {
    Plain(&'a str),
    File(&'a str),
    SecretsManager { id: &'a str, field: Option<&'a str> },
    Ssm(&'a str),
}

fn parse(value: &str) -> Reference<'_> {
    if let Some(path) = value.strip_prefix("file:") {
        Reference::File(path)
    } else if let Some(rest) = value.strip_prefix("secretsmanager:") {
        match rest.rsplit_once('#') {
            Some((id, field)) => Reference::SecretsManager {
                id,
                field: Some(field),
            },
            None => Reference::SecretsManager {
                id: rest,
                field: None,
            },
        }
    } else if let Some(name) = value.strip_prefix("ssm:") {
        Reference::Ssm(name)
    } else {
        Reference::Plain(value)
    }
}

/// An error about the setting `what`, safe to log (it never holds the secret).
fn failed(what: &str, reference: &str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("cannot read {what} from {reference}: {reason}"))
}

impl Secrets {
    /// A resolver with an AWS configuration of the caller's (tests point it at LocalStack).
    pub fn with_aws(config: aws_config::SdkConfig) -> Self {
        let aws = OnceCell::new();
        let _ = aws.set(config);
        Self { aws }
    }

    /// The value of the setting `what` (named in errors): itself, or what it refers to.
    pub async fn resolve(&self, what: &str, value: &str) -> Result<String, Error> {
        match parse(value) {
            Reference::Plain(v) => Ok(v.to_string()),
            Reference::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| failed(what, value, e))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
            }
            Reference::SecretsManager { id, field } => {
                let client = aws_sdk_secretsmanager::Client::new(self.aws().await);
                let output = client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| {
                        failed(
                            what,
                            value,
                            aws_sdk_secretsmanager::error::DisplayErrorContext(e),
                        )
                    })?;
                let secret = output.secret_string().ok_or_else(|| {
                    failed(
                        what,
                        value,
                        "the secret has no string value (a binary secret?)",
                    )
                })?;
                match field {
                    None => Ok(secret.to_string()),
                    Some(field) => json_field(secret, field).map_err(|r| failed(what, value, r)),
                }
            }
            Reference::Ssm(name) => {
                let client = aws_sdk_ssm::Client::new(self.aws().await);
                let output = client
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| failed(what, value, aws_sdk_ssm::error::DisplayErrorContext(e)))?;
                output
                    .parameter()
                    .and_then(|p| p.value())
                    .map(str::to_string)
                    .ok_or_else(|| failed(what, value, "the parameter has no value"))
            }
        }
    }

    /// Like [`Secrets::resolve`] for an optional setting.
    pub async fn resolve_opt(
        &self,
        what: &str,
        value: Option<&str>,
    ) -> Result<Option<String>, Error> {
        match value {
            Some(v) => self.resolve(what, v).await.map(Some),
            None => Ok(None),
        }
    }

    async fn aws(&self) -> &aws_config::SdkConfig {
        self.aws
            .get_or_init(|| aws_config::defaults(BehaviorVersion::latest()).load())
            .await
    }
}

/// One string field of a JSON object.
fn json_field(secret: &str, field: &str) -> Result<String, String> {
    let object: serde_json::Value = serde_json::from_str(secret)
        .map_err(|_| format!("the secret is not JSON, so it has no field {field:?}"))?;
    match object.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) if !other.is_null() => Ok(other.to_string()),
        _ => Err(format!("the JSON secret has no field {field:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_recognised() {
        assert_eq!(parse("hunter2"), Reference::Plain("hunter2"));
        assert_eq!(parse("file:/run/s"), Reference::File("/run/s"));
        assert_eq!(
            parse("secretsmanager:arn:aws:secretsmanager:eu-west-1:1:secret:rds!c-1#password"),
            Reference::SecretsManager {
                id: "arn:aws:secretsmanager:eu-west-1:1:secret:rds!c-1",
                field: Some("password")
            }
        );
        assert_eq!(
            parse("secretsmanager:stowage/db"),
            Reference::SecretsManager {
                id: "stowage/db",
                field: None
            }
        );
        assert_eq!(parse("ssm:/stowage/key"), Reference::Ssm("/stowage/key"));
    }

    #[tokio::test]
    async fn files_and_json_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cr3t\n").expect("write");
        let secrets = Secrets::default();
        let reference = format!("file:{}", file.display());
        assert_eq!(
            secrets
                .resolve("the password", &reference)
                .await
                .expect("file"),
            "s3cr3t"
        );
        let missing = secrets
            .resolve("the password", "file:/nonexistent/pw")
            .await
            .expect_err("missing file");
        assert!(
            missing
                .to_string()
                .contains("cannot read the password from file:/nonexistent/pw")
        );
        assert_eq!(
            json_field(r#"{"username":"stowage","password":"p@ss"}"#, "password").as_deref(),
            Ok("p@ss")
        );
        assert!(json_field(r#"{"username":"x"}"#, "password").is_err());
        assert!(json_field("plain", "password").is_err());
    }
}
