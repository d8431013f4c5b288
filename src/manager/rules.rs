//! Rules the control API enforces on user requests, shared with other callers (the CLI checks the same things
//! before it sends a request; a GitOps watcher would too): what `service scale` and `--replicas` may change, and
//! the names and sizes of secrets and configs.
//!
//! Pure: no store, no I/O. Must not: know about gRPC (the control API maps these errors to status codes).

use crate::model::{ServiceMode, ServiceSpec};

use crate::model::limits::CEILING_REPLICAS;
pub use crate::model::limits::MAX_SECRET_SIZE;

/// `service scale` asked of a service whose mode has no replica count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotScalable {
    /// The service's name.
    pub service: String,
    /// Its mode's name (`global`, `global job`).
    pub mode: &'static str,
}

impl std::fmt::Display for NotScalable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: scale can only be used with replicated or replicated-job mode (service is {})",
            self.service, self.mode
        )
    }
}

/// One `SERVICE=REPLICAS` argument of `service scale`: a whole number of replicas (0 included) up to the
/// highest limit a cluster can set (the cluster's own limit is checked by the manager).
pub fn parse_scale_arg(pair: &str) -> Result<(&str, u64), String> {
    let Some((name, n)) = pair.split_once('=') else {
        return Err(format!(
            "invalid scale specifier {pair:?}: expected SERVICE=REPLICAS"
        ));
    };
    let Ok(replicas) = n.parse::<u64>() else {
        return Err(format!(
            "invalid replicas value {n:?} for {name}: expected a whole number"
        ));
    };
    if replicas > CEILING_REPLICAS {
        return Err(format!(
            "invalid replicas value {n:?} for {name}: replicas {replicas} is over the limit of \
             {CEILING_REPLICAS}, the most any cluster allows"
        ));
    }
    Ok((name, replicas))
}

/// The mode `service scale NAME=replicas` gives `spec`: a replicated service gets `replicas` tasks; a
/// replicated job runs `replicas` at once and completes at least that many; global services and global jobs
/// cannot be scaled.
pub fn scaled_mode(spec: &ServiceSpec, replicas: u64) -> Result<ServiceMode, NotScalable> {
    match &spec.mode {
        ServiceMode::Replicated { .. } => Ok(ServiceMode::Replicated { replicas }),
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => Ok(ServiceMode::ReplicatedJob {
            max_concurrent: replicas,
            total_completions: (*total_completions).max(replicas),
        }),
        other => Err(NotScalable {
            service: spec.name.clone(),
            mode: other.name(),
        }),
    }
}

/// The mode `service update --replicas N` gives a service in `mode`: replicated services only.
pub fn replicas_flag(mode: &ServiceMode, replicas: u64) -> Result<ServiceMode, String> {
    match mode {
        ServiceMode::Replicated { .. } => Ok(ServiceMode::Replicated { replicas }),
        other => Err(format!(
            "--replicas can only be used with replicated mode (service is {})",
            other.name()
        )),
    }
}

/// A secret or config refused by [`check_object_name`] or [`check_secret_data`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectRuleError {
    /// The name breaks docker's name rule.
    BadName(String),
    /// No data.
    EmptySecret,
    /// More than [`MAX_SECRET_SIZE`] bytes.
    SecretTooLarge,
}

impl std::fmt::Display for ObjectRuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectRuleError::BadName(name) => write!(
                f,
                "invalid name {name:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit (at most 64)"
            ),
            ObjectRuleError::EmptySecret => write!(f, "secret data is empty"),
            ObjectRuleError::SecretTooLarge => write!(f, "secret data is larger than 500 KiB"),
        }
    }
}

/// Checks a secret/config name (docker's rule: letters, digits, `-`, `_`, `.`, starting with a letter or
/// digit, at most 64).
pub fn check_object_name(name: &str) -> Result<(), ObjectRuleError> {
    if crate::model::limits::valid_name(name, crate::model::limits::MAX_OBJECT_NAME) {
        Ok(())
    } else {
        Err(ObjectRuleError::BadName(name.to_string()))
    }
}

/// Checks the data of a secret: not empty, at most [`MAX_SECRET_SIZE`] bytes.
pub fn check_secret_data(data: &[u8]) -> Result<(), ObjectRuleError> {
    if data.is_empty() {
        Err(ObjectRuleError::EmptySecret)
    } else if data.len() > MAX_SECRET_SIZE {
        Err(ObjectRuleError::SecretTooLarge)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: ServiceMode) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            mode,
            ..ServiceSpec::default()
        }
    }

    #[test]
    fn scale_arguments_are_service_equals_whole_number() {
        assert_eq!(parse_scale_arg("web=5"), Ok(("web", 5)));
        assert_eq!(parse_scale_arg("web=0"), Ok(("web", 0)));
        assert_eq!(
            parse_scale_arg("web").unwrap_err(),
            "invalid scale specifier \"web\": expected SERVICE=REPLICAS"
        );
        assert_eq!(
            parse_scale_arg("web=-1").unwrap_err(),
            "invalid replicas value \"-1\" for web: expected a whole number"
        );
        assert!(parse_scale_arg("web=two").is_err());
        assert_eq!(
            parse_scale_arg("web=4000000000").unwrap_err(),
            "invalid replicas value \"4000000000\" for web: replicas 4000000000 is over the limit of \
             1000000, the most any cluster allows"
        );
    }

    #[test]
    fn replicated_services_and_jobs_scale_global_ones_do_not() {
        assert_eq!(
            scaled_mode(&spec(ServiceMode::Replicated { replicas: 1 }), 4),
            Ok(ServiceMode::Replicated { replicas: 4 })
        );
        let job = ServiceMode::ReplicatedJob {
            max_concurrent: 1,
            total_completions: 3,
        };
        assert_eq!(
            scaled_mode(&spec(job.clone()), 2),
            Ok(ServiceMode::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 3
            })
        );
        assert_eq!(
            scaled_mode(&spec(job), 5),
            Ok(ServiceMode::ReplicatedJob {
                max_concurrent: 5,
                total_completions: 5
            })
        );
        for mode in [ServiceMode::Global, ServiceMode::GlobalJob] {
            let err = scaled_mode(&spec(mode.clone()), 2).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("web: scale can only be used with replicated or replicated-job mode (service is {})", mode.name())
            );
        }
    }

    #[test]
    fn the_replicas_flag_is_for_replicated_services_only() {
        assert_eq!(
            replicas_flag(&ServiceMode::Replicated { replicas: 1 }, 0),
            Ok(ServiceMode::Replicated { replicas: 0 })
        );
        assert_eq!(
            replicas_flag(&ServiceMode::Global, 2).unwrap_err(),
            "--replicas can only be used with replicated mode (service is global)"
        );
        let job = ServiceMode::ReplicatedJob {
            max_concurrent: 1,
            total_completions: 1,
        };
        assert!(replicas_flag(&job, 2).is_err());
    }

    #[test]
    fn object_names_follow_dockers_rule() {
        for ok in ["a", "db_password", "app.conf", "x-1", &"a".repeat(64)] {
            assert_eq!(check_object_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", &"a".repeat(65)] {
            assert_eq!(
                check_object_name(bad),
                Err(ObjectRuleError::BadName(bad.to_string()))
            );
        }
        assert_eq!(
            check_object_name("a b").unwrap_err().to_string(),
            "invalid name \"a b\": use letters, digits, '-', '_' and '.', starting with a letter or digit (at most 64)"
        );
    }

    #[test]
    fn secret_data_is_between_one_byte_and_500_kib() {
        assert_eq!(check_secret_data(b"x"), Ok(()));
        assert_eq!(check_secret_data(&vec![0; MAX_SECRET_SIZE]), Ok(()));
        assert_eq!(
            check_secret_data(b"").unwrap_err().to_string(),
            "secret data is empty"
        );
        assert_eq!(
            check_secret_data(&vec![0; MAX_SECRET_SIZE + 1])
                .unwrap_err()
                .to_string(),
            "secret data is larger than 500 KiB"
        );
    }
}
