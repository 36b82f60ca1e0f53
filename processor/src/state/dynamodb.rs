//! The DynamoDB store (deployments). Not built yet: comes with the live
//! sources work (issue 8).

use async_trait::async_trait;

use super::{Committed, StateError, StateStore};

pub struct DynamoStore {}

impl DynamoStore {
    pub async fn build(
        _cfg: &crate::config::CheckpointsConfig,
        _aws: &crate::aws::AwsConfig,
    ) -> Result<Self, StateError> {
        Err(StateError::Invalid("the dynamodb checkpoint store is not built yet".into()))
    }
}

#[async_trait]
impl StateStore for DynamoStore {
    async fn load(&self) -> Result<Option<Committed>, StateError> {
        Ok(None)
    }

    async fn commit(&self, _c: &Committed, _changed: &[String]) -> Result<(), StateError> {
        Err(StateError::Invalid("not built".into()))
    }

    fn describe(&self) -> String {
        "dynamodb".into()
    }
}
