//! The table's flags and environment variables, as a clap argument group
//! that `ttmd`'s `Args` flattens in: the flags exist only through the
//! table, so none can be parsed and then forgotten.

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, FromArgMatches};

use super::settings::{SETTINGS, Setting};
use super::{Overrides, Source};

/// The settings given as flags or environment variables, in table order.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags {
    settings: Vec<(&'static str, String, Source)>,
}

impl SettingFlags {
    /// The overrides of a config loaded with `config_file` (`--config`).
    pub fn overrides(&self, config_file: Option<std::path::PathBuf>) -> Overrides {
        Overrides {
            config_file,
            settings: self.settings.clone(),
        }
    }
}

/// The flag's clap id is the setting's key, so the matches are read back
/// by key and cannot be mistaken for a derived field of `Args`.
fn arg(s: &'static Setting) -> Arg {
    Arg::new(s.key)
        .long(s.flag)
        .env(s.env)
        .value_name(s.value_name)
        .help(s.help)
        .value_parser(clap::value_parser!(String))
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut settings = Vec::new();
        for s in SETTINGS {
            let source = match matches.value_source(s.key) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env(s.env),
                _ => continue,
            };
            let value = matches
                .try_get_one::<String>(s.key)
                .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))?;
            if let Some(v) = value {
                settings.push((s.key, v.clone(), source));
            }
        }
        Ok(SettingFlags { settings })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = SettingFlags::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(cmd: Command) -> Command {
        SETTINGS.iter().fold(cmd, |cmd, s| cmd.arg(arg(s)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        SettingFlags::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args as _;

    #[test]
    fn flags_and_variables_become_overrides() {
        let cmd = SettingFlags::augment_args(Command::new("ttmd"));
        cmd.clone().debug_assert();
        let m = cmd
            .try_get_matches_from(["ttmd", "--limit-payload", "10", "--allow-gids=1,2"])
            .unwrap();
        let flags = SettingFlags::from_arg_matches(&m).unwrap();
        assert_eq!(
            flags.settings,
            [
                ("limits.payload", "10".to_string(), Source::Flag),
                ("access.gids", "1,2".to_string(), Source::Flag),
            ]
        );
    }
}
