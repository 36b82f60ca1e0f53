use async_trait::async_trait;

use super::SqsSourceConfig;
use crate::aws::AwsConfig;
use crate::sources::{Source, SourceContext, SourceError};

pub struct SqsSource {
    #[allow(dead_code)]
    cfg: SqsSourceConfig,
}

impl SqsSource {
    pub async fn build(_name: &str, cfg: &SqsSourceConfig, _aws: &AwsConfig) -> Result<Self, SourceError> {
        Ok(SqsSource { cfg: cfg.clone() })
    }
}

#[async_trait]
impl Source for SqsSource {
    async fn run(self: Box<Self>, _ctx: SourceContext) -> Result<(), SourceError> {
        Err(SourceError::Fatal("the sqs source is not built yet".into()))
    }
}
