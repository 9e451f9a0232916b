//! Which drivers a run loads (`ntsim run`, `ntsim test`, `ntsim demo`).
//!
//! A driver is given by path (`--driver PATH`, a test file's `driver PATH`
//! line) or by the name of one of the repository's drivers
//! (`--driver-name NAME`, a scenario's `load-driver NAME` line), which is
//! built with cargo (or taken from `<NAME>_SYS`) by
//! [`crate::build::try_driver_image_named`]. The first of these that names
//! any driver decides, whole ([`resolve`]):
//!
//! 1. the command line (`--driver` and `--driver-name`, in the order given);
//! 2. the test file's `driver PATH` lines, in order;
//! 3. the scenario's `load-driver NAME` lines, in order;
//! 4. otherwise ntosebpfext alone.
//!
//! The drivers load in that order (each runs its DriverEntry before the
//! next loads) and unload in the reverse order.

use std::path::PathBuf;

/// One driver, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverSpec {
    /// An image file.
    Path(PathBuf),
    /// One of [`crate::build::DRIVERS`].
    Name(String),
}

impl DriverSpec {
    /// The image file: the path, or the named driver's image (built with
    /// cargo when `<NAME>_SYS` is not set).
    ///
    /// # Errors
    ///
    /// A name that is not one of the repository's drivers, or a build that
    /// failed.
    pub fn image(&self) -> Result<PathBuf, String> {
        match self {
            DriverSpec::Path(p) => Ok(p.clone()),
            DriverSpec::Name(name) => crate::build::try_driver_image_named(name),
        }
    }
}

/// Checks that `name` is one of the repository's drivers.
///
/// # Errors
///
/// A message listing the drivers there are.
pub fn check_name(name: &str) -> Result<(), String> {
    if crate::build::DRIVERS.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not one of the repository's drivers ({})",
            crate::build::DRIVERS.join(", ")
        ))
    }
}

/// The drivers of a run, by the rule of the module documentation: the
/// command's when it names any, else the test file's, else the
/// scenario's, else ntosebpfext.
pub fn choose(command: &[DriverSpec], file: &[PathBuf], scenario: &[String]) -> Vec<DriverSpec> {
    if !command.is_empty() {
        command.to_vec()
    } else if !file.is_empty() {
        file.iter().cloned().map(DriverSpec::Path).collect()
    } else if !scenario.is_empty() {
        scenario.iter().cloned().map(DriverSpec::Name).collect()
    } else {
        vec![DriverSpec::Name(crate::build::NTOSEBPFEXT.to_string())]
    }
}

/// [`choose`], then each driver's image file, in load order.
///
/// # Errors
///
/// As [`DriverSpec::image`].
pub fn resolve(
    command: &[DriverSpec],
    file: &[PathBuf],
    scenario: &[String],
) -> Result<Vec<PathBuf>, String> {
    choose(command, file, scenario)
        .iter()
        .map(DriverSpec::image)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> DriverSpec {
        DriverSpec::Name(n.into())
    }

    #[test]
    fn the_first_source_that_names_a_driver_decides_whole() {
        let cmd = [DriverSpec::Path("a.sys".into()), name("ntosebpfext")];
        let file = [PathBuf::from("f.sys")];
        // `choose` takes the names as given (the scenario parser checks
        // them).
        let scen = ["first".to_string(), "second".to_string()];
        assert_eq!(choose(&cmd, &file, &scen), cmd.to_vec());
        assert_eq!(
            choose(&[], &file, &scen),
            [DriverSpec::Path("f.sys".into())]
        );
        assert_eq!(choose(&[], &[], &scen), [name("first"), name("second")]);
        assert_eq!(choose(&[], &[], &[]), [name("ntosebpfext")]);
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let e = name("nosuch").image().unwrap_err();
        assert!(e.contains("\"nosuch\" is not one of"), "{e}");
        assert!(e.contains("ntosebpfext"), "{e}");
        assert!(check_name("nosuch").is_err());
        assert!(check_name("ntosebpfext").is_ok());
    }
}
