//! `recurrent train` arguments: a TOML file or a run to resume, and one flag
//! per option (declared once in `recurrent_cli::train::config`), each
//! optional so that a flag overrides the file only when given.

use clap::Args;
use recurrent_cli::train::config::TrainFlags;
use recurrent_cli::train::{Mode, TrainConfig};
use std::path::PathBuf;

#[derive(Args, Debug, Default, Clone)]
pub struct TrainArgs {
    /// TOML file with any of the options below (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue the run in this output folder from its last epoch (flags such as --epochs may extend it).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Replace the run in the output folder (without it, a folder that holds a run is refused).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    #[command(flatten)]
    pub flags: TrainFlags,
}

impl TrainArgs {
    /// How the run treats its output folder.
    pub fn mode(&self) -> Mode {
        match (&self.resume, self.overwrite) {
            (Some(_), _) => Mode::Resume,
            (None, true) => Mode::Replace,
            (None, false) => Mode::Fresh,
        }
    }

    /// Applies the flags that were given on top of `c`.
    pub fn apply(&self, c: &mut TrainConfig) {
        self.flags.apply(c)
    }
}
