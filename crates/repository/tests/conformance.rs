//! The `Store` contract, run against every backend: the local filesystem, Swift with
//! tempauth and S3 (Swift's s3api), the last two on a real Swift all-in-one that
//! `scripts/swift-aio.sh start` brings up at `VBS_TEST_SWIFT` (default
//! `127.0.0.1:8080`). A Swift that does not answer fails these tests; they are never
//! skipped. Each test works in a container (= bucket) of its own and deletes it after.
//!
//! Also here: token refresh, ranged reads measured on the wire, a missing container
//! created at open, an object over 5 MiB stored as one plain object, and bad
//! credentials giving clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vbs_repository::{Credentials, ObjectMeta, Store, StoreError};

/// The conformance suite every backend must pass.
async fn conformance(store: &Store) {
    assert!(matches!(
        store.get("missing/x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.get_range("missing/x", 0..1).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!store.exists("a/b/c").await.unwrap());
    let data = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    store.put("a/b/c", data.clone()).await.unwrap();
    assert!(store.exists("a/b/c").await.unwrap());
    assert_eq!(store.get("a/b/c").await.unwrap(), data);
    assert_eq!(
        store.get_range("a/b/c", 10..20).await.unwrap(),
        data.slice(10..20)
    );
    assert_eq!(
        store.get_range("a/b/c", 99_990..100_000).await.unwrap(),
        data.slice(99_990..)
    );
    assert!(
        store.get_range("a/b/c", 99_990..100_010).await.is_err(),
        "a range past the end is an error, not a short read"
    );
    // A retried put of the same bytes is harmless.
    store.put("a/b/c", data.clone()).await.unwrap();
    store.put("a/d", Bytes::from_static(b"x")).await.unwrap();
    store.put("a/empty", Bytes::new()).await.unwrap();
    assert_eq!(store.get("a/empty").await.unwrap(), Bytes::new());
    // Over the 5 MiB at which OpenDAL would segment a streamed upload: still one object.
    let big = Bytes::from(
        (0..6 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect::<Vec<u8>>(),
    );
    store.put("big/one", big.clone()).await.unwrap();
    assert_eq!(store.get("big/one").await.unwrap(), big);
    assert_eq!(
        store.list("big/").await.unwrap(),
        vec![ObjectMeta {
            key: "big/one".into(),
            size: big.len() as u64
        }]
    );
    let mut listed = store.list("a/").await.unwrap();
    listed.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(
        listed,
        vec![
            ObjectMeta {
                key: "a/b/c".into(),
                size: 100_000
            },
            ObjectMeta {
                key: "a/d".into(),
                size: 1
            },
            ObjectMeta {
                key: "a/empty".into(),
                size: 0
            },
        ]
    );
    assert!(store.list("nothing/").await.unwrap().is_empty());
    // `any` stops at the first object below a prefix, nested ones included.
    assert!(store.any("a/").await.unwrap());
    assert!(store.any("a/b/").await.unwrap());
    assert!(!store.any("nothing/").await.unwrap());
    store.delete("a/b/c").await.unwrap();
    store.delete("a/b/c").await.unwrap();
    store.delete("never/was").await.unwrap();
    assert!(matches!(
        store.get("a/b/c").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!store.exists("a/b/c").await.unwrap());
    assert_eq!(store.list("a/").await.unwrap().len(), 2);
    for key in ["a/d", "a/empty", "big/one"] {
        store.delete(key).await.unwrap();
    }
    assert!(store.list("").await.unwrap().is_empty());
    assert!(!store.any("a/").await.unwrap());
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    conformance(&store).await;
    // Nothing is left staged.
    let staged = std::fs::read_dir(dir.path().join(".staging"))
        .unwrap()
        .count();
    assert_eq!(staged, 0);
}

#[tokio::test]
async fn swift_tempauth_store_conforms() {
    let swift = RawSwift::connect().await;
    let container = unique("conf");
    let url = format!("swift+tempauth://{}/{container}/repo", swift.addr);
    swift
        .cleanup_after(&container, async move {
            let store = Store::open(&url, &tempauth()).await.unwrap();
            assert_eq!(store.location(), url);
            assert_eq!(store.local_root(), None);
            conformance(&store).await;

            // The prefix keeps stores in one container apart.
            store.put("k", Bytes::from_static(b"1")).await.unwrap();
            let other = Store::open(&url.replace("/repo", "/other"), &tempauth())
                .await
                .unwrap();
            assert!(other.list("").await.unwrap().is_empty());
            assert!(!other.exists("k").await.unwrap());
            store.delete("k").await.unwrap();
        })
        .await;
}

#[tokio::test]
async fn swift_writes_big_objects_in_one_put() {
    let swift = RawSwift::connect().await;
    let container = unique("big");
    let url = format!("swift+tempauth://{}/{container}", swift.addr);
    let (raw, name) = (swift.clone(), container.clone());
    swift
        .cleanup_after(&name, async move {
            let store = Store::open(&url, &tempauth()).await.unwrap();
            let big = Bytes::from(vec![7u8; 6 * 1024 * 1024 + 1]);
            store.put("packs/ab/big", big.clone()).await.unwrap();
            // No SLO manifest, no .segments/ objects: one plain object.
            assert_eq!(raw.object_names(&container).await, ["packs/ab/big"]);
            let head = raw.head_object(&container, "packs/ab/big").await;
            assert_eq!(head.status(), 200);
            assert!(head.headers().get("x-static-large-object").is_none());
            assert_eq!(
                head.headers()["content-length"].to_str().unwrap(),
                big.len().to_string()
            );
            store.delete("packs/ab/big").await.unwrap();
        })
        .await;
}

#[tokio::test]
async fn s3_store_conforms() {
    let swift = RawSwift::connect().await;
    // On Swift's s3api a bucket is a container of the same account: make it the Swift way.
    let bucket = unique("s3");
    swift.create_container(&bucket).await;
    let url = format!(
        "s3://{bucket}/repo?endpoint=http://{}&region=us-east-1",
        swift.addr
    );
    let name = bucket.clone();
    swift
        .cleanup_after(&name, async move {
            let store = Store::open(&url, &s3_creds()).await.unwrap();
            assert_eq!(
                store.location(),
                format!(
                    "s3://{bucket}/repo?endpoint=http://{}&region=us-east-1&style=path",
                    swift_addr()
                )
            );
            conformance(&store).await;
        })
        .await;
}

/// S3's virtual-hosted style: the bucket travels in the host name
/// (`vbs-virtual.s3.vbs.test`, which `scripts/swift-aio.sh start` puts in /etc/hosts,
/// and Swift's s3api reads as the bucket under its `storage_domain`).
#[tokio::test]
async fn s3_virtual_host_style_conforms() {
    let swift = RawSwift::connect().await;
    let bucket = "vbs-virtual";
    swift.create_container(bucket).await;
    let port = swift
        .addr
        .rsplit_once(':')
        .map_or("8080", |(_, p)| p)
        .to_owned();
    let url = format!(
        "s3://{bucket}/repo?endpoint=http://s3.vbs.test:{port}&region=us-east-1&style=virtual"
    );
    swift
        .cleanup_after(bucket, async move {
            let store = Store::open(&url, &s3_creds()).await.unwrap();
            assert_eq!(store.location(), url);
            conformance(&store).await;
        })
        .await;
}

#[tokio::test]
async fn swift_token_is_refreshed_when_refused_or_expiring() {
    let swift = RawSwift::connect().await;
    let container = unique("token");
    let url = format!("swift+tempauth://{}/{container}", swift.addr);
    swift
        .cleanup_after(&container, async move {
            let store = Store::open(&url, &tempauth()).await.unwrap();
            assert_eq!(store.authentications_for_tests(), 1);
            store.put("one", Bytes::from_static(b"1")).await.unwrap();

            // Swift now answers 401 to our token: the put re-authenticates and succeeds.
            assert!(store.break_token_for_tests().unwrap());
            store.put("two", Bytes::from_static(b"2")).await.unwrap();
            assert_eq!(store.authentications_for_tests(), 2);
            assert_eq!(store.get("one").await.unwrap(), Bytes::from_static(b"1"));
            assert_eq!(store.authentications_for_tests(), 2);

            // Eight requests refused at once authenticate once between them.
            store.break_token_for_tests().unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let store = store.clone();
                tasks.spawn(async move { store.get("two").await });
            }
            while let Some(got) = tasks.join_next().await {
                assert_eq!(got.unwrap().unwrap(), Bytes::from_static(b"2"));
            }
            assert_eq!(store.authentications_for_tests(), 3);

            // A token about to expire is replaced before the request, not after a 401.
            assert!(store.expire_token_for_tests());
            assert!(store.exists("one").await.unwrap());
            assert_eq!(store.authentications_for_tests(), 4);
            assert!(store.exists("two").await.unwrap());
            assert_eq!(store.authentications_for_tests(), 4);
            for key in ["one", "two"] {
                store.delete(key).await.unwrap();
            }
        })
        .await;
}

#[tokio::test]
async fn missing_container_is_created_at_open() {
    let swift = RawSwift::connect().await;
    let container = unique("new");
    assert_eq!(swift.container_status(&container).await, 404);
    let url = format!("swift+tempauth://{}/{container}/p", swift.addr);
    let (raw, name) = (swift.clone(), container.clone());
    swift
        .cleanup_after(&name, async move {
            let store = Store::open(&url, &tempauth()).await.unwrap();
            assert_eq!(raw.container_status(&container).await, 204);
            // Opening again finds it and leaves it as it is.
            store.put("x", Bytes::from_static(b"x")).await.unwrap();
            let again = Store::open(&url, &tempauth()).await.unwrap();
            assert_eq!(again.get("x").await.unwrap(), Bytes::from_static(b"x"));
            assert_eq!(raw.object_names(&container).await, ["p/x"]);
            store.delete("x").await.unwrap();
        })
        .await;
}

/// `get_range` must fetch the range, not the object: a proxy between the store and
/// Swift counts the bytes that come back.
#[tokio::test]
async fn ranged_reads_fetch_only_the_range() {
    let swift = RawSwift::connect().await;
    let (proxy, received) = counting_proxy(swift.addr.clone()).await;
    let container = unique("range");
    swift.create_container(&container).await;
    let swift_url = format!("swift+tempauth://{proxy}/{container}/sw");
    let s3_url = format!("s3://{container}/s3?endpoint=http://{proxy}");
    swift
        .cleanup_after(&container, async move {
            let object = Bytes::from(
                (0..4 * 1024 * 1024u32)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<u8>>(),
            );
            let swift = Store::open(&swift_url, &tempauth()).await.unwrap();
            let s3 = Store::open(&s3_url, &s3_creds()).await.unwrap();
            for store in [swift, s3] {
                store.put("obj", object.clone()).await.unwrap();
                received.store(0, Ordering::SeqCst);
                let part = store.get_range("obj", 1_000_000..1_004_096).await.unwrap();
                assert_eq!(part, object.slice(1_000_000..1_004_096));
                let wire = received.swap(0, Ordering::SeqCst);
                assert!(
                    wire < 64 * 1024,
                    "{}: a 4 KiB range took {wire} bytes on the wire",
                    store.location()
                );
                assert_eq!(store.get("obj").await.unwrap(), object);
                assert!(received.load(Ordering::SeqCst) >= object.len() as u64);
                store.delete("obj").await.unwrap();
            }
        })
        .await;
}

#[tokio::test]
async fn bad_credentials_are_clear_errors() {
    let swift = RawSwift::connect().await;
    let addr = &swift.addr;

    let wrong_key = Credentials {
        key: Some("not-the-key".into()),
        ..tempauth()
    };
    let err = Store::open(&format!("swift+tempauth://{addr}/vbs-never"), &wrong_key)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Auth(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("refused") && text.contains("/auth/v1.0"),
        "{text}"
    );
    assert!(!text.contains("not-the-key") && !format!("{err:?}").contains("not-the-key"));
    assert!(!err.is_retryable());

    let wrong_secret = Credentials {
        secret_access_key: Some("not-the-secret".into()),
        ..s3_creds()
    };
    let bucket = unique("bad");
    swift.create_container(&bucket).await;
    let url = format!("s3://{bucket}?endpoint=http://{addr}&region=us-east-1");
    let err = Store::open(&url, &wrong_secret).await.unwrap_err();
    assert!(matches!(err, StoreError::Auth(_)), "{err:?}");
    assert!(
        !format!("{err} {err:?}").contains("not-the-secret"),
        "{err:?}"
    );
    swift.delete_container(&bucket).await;

    let url = format!("s3://{}?endpoint=http://{addr}", unique("nobucket"));
    let err = Store::open(&url, &s3_creds()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Config(m) if m.contains("does not exist")),
        "{err:?}"
    );

    // A user without the right to create containers.
    let no_admin = Credentials {
        user: Some("test:tester3".into()),
        key: Some("testing3".into()),
        ..Credentials::default()
    };
    let container = unique("noadmin");
    let err = Store::open(&format!("swift+tempauth://{addr}/{container}"), &no_admin)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Auth(m) if m.contains("the Swift container")),
        "{err:?}"
    );
}

// ------------------------------------------------------------------- helpers

fn swift_addr() -> String {
    std::env::var("VBS_TEST_SWIFT").unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
}

fn tempauth() -> Credentials {
    Credentials {
        user: Some("test:tester".into()),
        key: Some("testing".into()),
        ..Credentials::default()
    }
}

fn s3_creds() -> Credentials {
    Credentials {
        access_key_id: Some("test:tester".into()),
        secret_access_key: Some("testing".into()),
        ..Credentials::default()
    }
}

/// A container (and S3 bucket) name no other test or run uses.
fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "vbs-test-{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Plain Swift requests as test:tester, for setting up and checking what a store did.
#[derive(Clone)]
struct RawSwift {
    addr: String,
    client: reqwest::Client,
    storage_url: String,
    token: String,
}

impl RawSwift {
    /// Fails the test when no Swift answers at `VBS_TEST_SWIFT`.
    async fn connect() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let addr = swift_addr();
        let client = reqwest::Client::new();
        let resp = client
            .get(format!("http://{addr}/auth/v1.0"))
            .header("X-Auth-User", "test:tester")
            .header("X-Auth-Key", "testing")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Swift answers at {addr} (VBS_TEST_SWIFT): {e}; \
                     start one with scripts/swift-aio.sh start"
                )
            });
        assert_eq!(resp.status(), 200, "tempauth at {addr} refused test:tester");
        let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
        Self {
            storage_url: header("x-storage-url"),
            token: header("x-auth-token"),
            addr,
            client,
        }
    }

    fn url(&self, container: &str) -> String {
        format!("{}/{container}", self.storage_url)
    }

    async fn container_status(&self, container: &str) -> u16 {
        let resp = self
            .client
            .head(self.url(container))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    }

    async fn create_container(&self, container: &str) {
        let resp = self
            .client
            .put(self.url(container))
            .header("X-Auth-Token", &self.token)
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert!(resp.status() == 201 || resp.status() == 202, "{resp:?}");
    }

    async fn object_names(&self, container: &str) -> Vec<String> {
        let resp = self
            .client
            .get(format!("{}?format=json", self.url(container)))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            return Vec::new();
        }
        let listing: Vec<serde_json::Value> = resp.json().await.unwrap();
        listing
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn head_object(&self, container: &str, name: &str) -> reqwest::Response {
        self.client
            .head(format!("{}/{name}", self.url(container)))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap()
    }

    /// Deletes every object, then the container. Listings can lag a moment behind
    /// deletes (409 Conflict), so it tries a few times.
    async fn delete_container(&self, container: &str) {
        for _ in 0..20 {
            for name in self.object_names(container).await {
                let url = format!("{}/{name}", self.url(container));
                let _ = self
                    .client
                    .delete(url)
                    .header("X-Auth-Token", &self.token)
                    .send()
                    .await;
            }
            let resp = self
                .client
                .delete(self.url(container))
                .header("X-Auth-Token", &self.token)
                .send()
                .await
                .unwrap();
            match resp.status().as_u16() {
                204 | 404 => return,
                409 => tokio::time::sleep(Duration::from_millis(500)).await,
                other => panic!("DELETE container {container}: HTTP {other}"),
            }
        }
        panic!("container {container} stays non-empty");
    }

    /// Runs `body`, then deletes `container` whether `body` passed or panicked.
    async fn cleanup_after(
        &self,
        container: &str,
        body: impl Future<Output = ()> + Send + 'static,
    ) {
        let outcome = tokio::spawn(body).await;
        self.delete_container(container).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// A TCP proxy to `target` on 127.0.0.1:0 that counts the bytes coming back.
async fn counting_proxy(target: String) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                    let _ = server_tx.shutdown().await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match server_rx.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = client_tx.shutdown().await;
                up.abort();
            });
        }
    });
    (addr, received)
}
