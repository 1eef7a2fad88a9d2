//! CloudFront signed URLs checked against independent implementations: botocore's
//! `CloudFrontSigner` (the Python interpreter scripts/test installs for LocalStack carries
//! botocore and cryptography) must produce the identical URL for the same key, policy and
//! expiry, and `openssl dgst -sha1 -verify` must accept the signature with the public key.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use stowage_core::KeyLayout;
use stowage_core::signing::UrlExpiry;
use stowage_s3::{CloudFrontSigner, S3Config};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A fresh RSA key pair made by openssl: (private PEM path, public PEM path).
fn key_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let private = dir.join("cf.pem");
    let public = dir.join("cf.pub.pem");
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&private)
        .arg("2048"));
    run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public));
    (private, public)
}

async fn signer(dir: &Path, pem: &str, ip: Option<&str>, custom: bool) -> CloudFrontSigner {
    let s3 = stowage_s3::connect(
        S3Config::local_emulator("http://127.0.0.1:9", "unused"),
        KeyLayout::default(),
        250_000_000,
        dir.join("spool"),
    )
    .await
    .expect("s3");
    let expiry = UrlExpiry {
        base: Duration::from_secs(600),
        slow_client_bytes_per_sec: 1_000_000,
        max: Duration::from_secs(86_400),
    };
    CloudFrontSigner::new(
        s3.backend().clone(),
        "d111111abcdef8.cloudfront.net",
        "K2JCJMDEHXQW5F",
        pem,
        ip.map(String::from),
        custom,
        expiry,
    )
    .expect("signer")
}

/// botocore's URL for the same inputs.
fn botocore(
    python: &str,
    key: &Path,
    url: &str,
    expires: u64,
    ip: Option<&str>,
    custom: bool,
) -> String {
    let script = r#"
import sys, datetime
from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
key = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), password=None)
signer = CloudFrontSigner('K2JCJMDEHXQW5F', lambda m: key.sign(m, padding.PKCS1v15(), hashes.SHA1()))
url, expires, ip, custom = sys.argv[2], int(sys.argv[3]), sys.argv[4] or None, sys.argv[5] == '1'
when = datetime.datetime.fromtimestamp(expires, tz=datetime.timezone.utc)
if ip or custom:
    print(signer.generate_presigned_url(url, policy=signer.build_policy(url, when, ip_address=ip)))
else:
    print(signer.generate_presigned_url(url, date_less_than=when))
"#;
    run(Command::new(python).args(["-c", script]).arg(key).args([
        url,
        &expires.to_string(),
        ip.unwrap_or(""),
        if custom { "1" } else { "0" },
    ]))
    .trim()
    .to_string()
}

/// CloudFront's base64 back to bytes.
fn decode(s: &str) -> Vec<u8> {
    let standard: String = s
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '=',
            '~' => '/',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(standard)
        .expect("base64")
}

fn param<'a>(url: &'a str, name: &str) -> &'a str {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {url}"))
}

#[tokio::test]
async fn signed_urls_match_botocore_and_verify_with_the_public_key() {
    let Some(python) = stowage_tests::s3::localstack_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = key_pair(dir.path());
    let pem = std::fs::read_to_string(&private).expect("pem");
    let url = "https://d111111abcdef8.cloudfront.net/filestore/ab/abcdef?response-content-disposition=attachment%3B%20filename%3D%22app.jar%22&response-content-type=application%2Fjava-archive";
    let expires = 1_893_456_000;
    for (ip, custom) in [(None, false), (None, true), (Some("192.0.2.0/24"), true)] {
        let ours = signer(dir.path(), &pem, ip, custom)
            .await
            .sign(url, expires);
        let theirs = botocore(&python, &private, url, expires, ip, custom);
        assert_eq!(ours, theirs, "ip {ip:?}, custom {custom}");

        // The signature verifies over the policy CloudFront will rebuild.
        let policy = if custom {
            decode(param(&ours, "Policy"))
        } else {
            format!(r#"{{"Statement":[{{"Resource":"{url}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#).into_bytes()
        };
        let (policy_file, signature_file) = (dir.path().join("policy"), dir.path().join("sig"));
        std::fs::write(&policy_file, &policy).expect("policy");
        std::fs::write(&signature_file, decode(param(&ours, "Signature"))).expect("signature");
        let verified = run(Command::new("openssl")
            .args(["dgst", "-sha1", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&signature_file)
            .arg(&policy_file));
        assert!(verified.contains("Verified OK"), "{verified}");
    }
    // A PKCS#1 key works the same.
    let pkcs1 = run(Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(&private));
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
    let a = signer(dir.path(), &pkcs1, None, false)
        .await
        .sign(url, expires);
    let b = signer(dir.path(), &pem, None, false)
        .await
        .sign(url, expires);
    assert_eq!(a, b);
}

#[tokio::test]
async fn a_key_that_is_not_rsa_pem_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = stowage_s3::connect(
        S3Config::local_emulator("http://127.0.0.1:9", "unused"),
        KeyLayout::default(),
        1,
        dir.path().join("spool"),
    )
    .await
    .expect("s3");
    let expiry = UrlExpiry {
        base: Duration::from_secs(1),
        slow_client_bytes_per_sec: 1,
        max: Duration::from_secs(2),
    };
    let err = CloudFrontSigner::new(
        s3.backend().clone(),
        "d.cloudfront.net",
        "K",
        "not a key",
        None,
        false,
        expiry,
    )
    .expect_err("refused");
    assert!(err.to_string().contains("not an RSA key in PEM"), "{err}");
}
