//! `stowage bench`: placeholder replaced below.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {}
pub(crate) async fn run(_args: &BenchArgs) -> Result<(), stowage_core::Error> {
    Ok(())
}
