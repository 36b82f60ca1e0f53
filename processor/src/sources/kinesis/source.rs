use async_trait::async_trait;

use super::KinesisSourceConfig;
use crate::aws::AwsConfig;
use crate::sources::{Source, SourceContext, SourceError};

pub struct KinesisSource {
    #[allow(dead_code)]
    cfg: KinesisSourceConfig,
}

impl KinesisSource {
    pub async fn build(_name: &str, cfg: &KinesisSourceConfig, _aws: &AwsConfig) -> Result<Self, SourceError> {
        Ok(KinesisSource { cfg: cfg.clone() })
    }
}

#[async_trait]
impl Source for KinesisSource {
    async fn run(self: Box<Self>, _ctx: SourceContext) -> Result<(), SourceError> {
        Err(SourceError::Fatal("the kinesis source is not built yet".into()))
    }
}
