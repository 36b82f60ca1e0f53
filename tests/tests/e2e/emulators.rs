//! The harness itself: each local server starts, answers the ordinary AWS
//! SDK for Rust, and stops. (If these fail, every end-to-end test would.)

use trailwatch_tests::Server;

#[tokio::test]
async fn moto_serves_sqs_s3_dynamodb_and_security_hub() -> anyhow::Result<()> {
    let moto = Server::moto()?;
    let cfg = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let url = sqs.create_queue().queue_name("harness").send().await?.queue_url.unwrap_or_default();
    sqs.send_message().queue_url(&url).message_body("{}").send().await?;
    let got = sqs.receive_message().queue_url(&url).wait_time_seconds(1).send().await?;
    assert_eq!(got.messages().len(), 1);

    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&cfg).force_path_style(true).build());
    s3.create_bucket().bucket("harness").send().await?;
    s3.put_object().bucket("harness").key("k").body(b"x".to_vec().into()).send().await?;
    let body = s3.get_object().bucket("harness").key("k").send().await?.body.collect().await?.into_bytes();
    assert_eq!(&body[..], b"x");

    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let tables = ddb.list_tables().send().await?;
    assert!(tables.table_names().is_empty());

    let sh = aws_sdk_securityhub::Client::new(&cfg);
    let r = sh.get_findings().send().await?;
    assert!(r.findings().is_empty());
    Ok(())
}

#[tokio::test]
async fn kinesalite_serves_kinesis() -> anyhow::Result<()> {
    let k = Server::kinesalite()?;
    let cfg = k.sdk_config().await;
    let kin = aws_sdk_kinesis::Client::new(&cfg);
    kin.create_stream().stream_name("harness").shard_count(2).send().await?;
    for _ in 0..50 {
        let d = kin.describe_stream_summary().stream_name("harness").send().await?;
        if d.stream_description_summary().map(|s| s.stream_status().as_str()) == Some("ACTIVE") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let put = kin
        .put_record()
        .stream_name("harness")
        .partition_key("p")
        .data(aws_sdk_kinesis::primitives::Blob::new(b"{}".to_vec()))
        .send()
        .await?;
    assert!(put.sequence_number().len() > 20, "real-looking sequence numbers");
    let shards = kin.list_shards().stream_name("harness").send().await?;
    assert_eq!(shards.shards().len(), 2);
    Ok(())
}

#[test]
fn a_stopped_server_can_be_restarted_on_its_port() -> anyhow::Result<()> {
    let mut moto = Server::moto()?;
    let port = moto.port;
    moto.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    moto.restart()?;
    assert_eq!(moto.port, port);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    Ok(())
}
