//! The library entry (`ttmd::bind` + `ttmd::run`) in this process, driven by
//! the generated gRPC client: no ttmctl involved.

use ttm_proto::v1::events_response::Kind;
use ttm_proto::v1::{CreateRequest, EventsRequest, GetStateRequest, TransitionRequest, TxnRef};
use ttm_tests::{InProcess, grpc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_entry_serves_grpc() {
    let server = InProcess::start(|_| {});
    let root = server.root.clone();

    let mut c = grpc(&server.socket).await;
    let created = c
        .create(CreateRequest {
            module: "ttm".into(),
            description: "in process".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .state
        .expect("state");
    assert_eq!(created.stage, "NEW");
    assert!(
        created.txn_id.starts_with("in-process-"),
        "{}",
        created.txn_id
    );
    let txn = Some(TxnRef {
        module: "ttm".into(),
        txn_id: created.txn_id.clone(),
    });

    let moved = c
        .transition(TransitionRequest {
            txn: txn.clone(),
            stage: "SELECT".into(),
            pre: None,
        })
        .await
        .expect("transition")
        .into_inner()
        .state
        .expect("state");
    assert_eq!(moved.stage, "SELECT");
    assert_eq!(moved.seq, 3);

    let mut stream = c
        .events(EventsRequest {
            txn: txn.clone(),
            from_seq: 0,
            event: String::new(),
            follow: false,
        })
        .await
        .expect("events")
        .into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.expect("events stream") {
        if let Some(Kind::Event(event)) = message.kind {
            events.push(event);
        }
    }
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["txn_start", "activated", "stage_transition"]);
    for event in &events {
        let line: serde_json::Value = serde_json::from_str(&event.json).expect("event json");
        assert_eq!(line["seq"], event.seq);
    }

    // NUL cannot be passed on a command line; it can through the API.
    let err = c
        .get_state(GetStateRequest {
            txn: Some(TxnRef {
                module: "ttm".into(),
                txn_id: "a\0b".into(),
            }),
        })
        .await
        .expect_err("an id with NUL was accepted");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let _tree = server.stop().await;
    let log = std::fs::read_to_string(
        root.join("ttm/txns")
            .join(&created.txn_id)
            .join("events.ndjson"),
    )
    .unwrap();
    assert_eq!(log.lines().count(), 3);
}
