//! The tests' S3 server (SeaweedFS, started by `make test`): its settings from the environment,
//! a bucket of each test's own, and the store configuration for it.

use object_store::ClientOptions;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
use opsec_operator::backup::S3Config;

pub const REGION: &str = "us-east-1";

/// An S3 setting from the environment; fails the test (never skips it) without one.
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: this test needs a real S3 server; run it with \
             hack/with-controlplane.sh (make test), which starts one"
        ),
    }
}

/// The server's endpoint and credentials.
pub struct Settings {
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
}

pub fn settings() -> Settings {
    Settings {
        endpoint: env("OPSEC_S3_ENDPOINT").trim_end_matches('/').to_string(),
        key_id: env("AWS_ACCESS_KEY_ID"),
        secret: env("AWS_SECRET_ACCESS_KEY"),
    }
}

/// A bucket of the test's own (object_store cannot create buckets): one SigV4-signed
/// `PUT /<bucket>`, signed and sent with object_store's own client.
pub async fn bucket(tag: &str) -> String {
    opsec_operator::install_crypto_provider();
    let s = settings();
    let bucket = super::unique(&format!("opsec-{tag}"));
    let credential = AwsCredential {
        key_id: s.key_id.clone(),
        secret_key: s.secret.clone(),
        token: None,
    };
    let client = ReqwestConnector {}
        .connect(&ClientOptions::new().with_allow_http(true))
        .expect("HTTP client");
    let mut request = http::Request::builder()
        .method(http::Method::PUT)
        .uri(format!("{}/{bucket}", s.endpoint))
        .body(HttpRequestBody::from(Vec::<u8>::new()))
        .expect("request");
    AwsAuthorizer::new(&credential, "s3", REGION)
        .try_authorize(&mut request, None)
        .expect("signing");
    let response = client.execute(request).await.unwrap_or_else(|e| {
        panic!(
            "creating bucket {bucket} at {} failed: {e}; is the S3 server running?",
            s.endpoint
        )
    });
    let status = response.status();
    assert!(
        status.is_success(),
        "creating bucket {bucket} answered {status}"
    );
    bucket
}

/// The store configuration for `bucket` on the tests' server (prefix `backups`).
pub fn config(bucket: &str) -> S3Config {
    let s = settings();
    S3Config {
        bucket: bucket.into(),
        endpoint: Some(s.endpoint),
        region: REGION.into(),
        prefix: Some("backups".into()),
        access_key_id: s.key_id,
        secret_access_key: s.secret,
        force_path_style: true,
    }
}
