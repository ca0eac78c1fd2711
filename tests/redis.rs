//! The Redis Streams bus: smoke.

mod helpers;

use helpers::Store;
use serde_json::json;

#[tokio::test]
async fn smoke() {
    let Some(store) = Store::redis().await else { return };
    let a = store.start(&[]).await;
    let b = store.start(&[]).await;
    let mut ann = a.connect("c1", "ann").await;
    let mut bob = b.connect("c1", "bob").await;
    eprintln!("{} {}", ann.welcome, bob.welcome);
    ann.publish("stroke", json!({"x": 1}), "r1").await;
    eprintln!("ann: {}", ann.recv().await);
    eprintln!("ann: {}", ann.recv().await);
    eprintln!("bob: {}", bob.recv().await);
    eprintln!("{}", a.log_text());
}
