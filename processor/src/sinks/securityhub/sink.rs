use std::sync::Arc;

use async_trait::async_trait;

use super::SecurityHubSinkConfig;
use crate::evaluate::Finding;
use crate::sinks::{Sink, SinkContext, SinkError};

pub struct SecurityHubSink {}

impl SecurityHubSink {
    pub async fn build(_cfg: &SecurityHubSinkConfig, _ctx: &SinkContext<'_>) -> Result<Self, SinkError> {
        Err(SinkError::Config("the securityhub sink is not built yet".into()))
    }
}

#[async_trait]
impl Sink for SecurityHubSink {
    async fn send(&mut self, _findings: &[Arc<Finding>]) -> Result<(), SinkError> {
        Err(SinkError::Unavailable("not built".into()))
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
