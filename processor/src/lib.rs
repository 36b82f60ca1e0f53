//! trailwatch-processor: decoders, the pipeline, findings and the CLI.
pub mod decode;
pub mod findings;
