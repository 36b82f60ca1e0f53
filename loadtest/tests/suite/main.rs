//! The loadtest crate's integration tests in one binary (each links the
//! service and the AWS SDK; one binary keeps the build's disk and link time small).

mod e2e;
mod generate;
mod leases;
mod live;
mod prefilter;
mod tune;
