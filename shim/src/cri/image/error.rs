//! The one mapping of the image library's errors to gRPC codes. A function,
//! not `impl From<Error> for Status`: both types are foreign to berthd, so
//! the orphan rule forbids that impl here.

use berth_imageservice::Error;
use berth_imageservice::registry::RegistryError;
use tonic::Status;

/// gRPC codes that say what happened; the message is the error's text.
pub fn status(e: Error) -> Status {
    let msg = e.to_string();
    match &e {
        Error::Reference(_) | Error::Invalid { .. } | Error::Layer { hostile: true, .. } => {
            Status::invalid_argument(msg)
        }
        // The node failed to write the snapshot (disk full, I/O error).
        Error::Layer { hostile: false, .. } => Status::internal(msg),
        Error::NoPlatform { .. } | Error::NotFound(_) => Status::not_found(msg),
        Error::Hosts { .. } | Error::Pinned(_) => Status::failed_precondition(msg),
        Error::Corrupt { .. } => Status::data_loss(msg),
        Error::Limit { .. } => Status::resource_exhausted(msg),
        Error::Registry { source, .. } => match source {
            RegistryError::NotFound { .. } => Status::not_found(msg),
            RegistryError::Denied { .. } | RegistryError::Token { .. } => {
                Status::permission_denied(msg)
            }
            RegistryError::BadCredentials(_) => Status::invalid_argument(msg),
            RegistryError::Tls { .. } => Status::failed_precondition(msg),
            RegistryError::TooLarge { .. } => Status::invalid_argument(msg),
            RegistryError::Deadline { .. } | RegistryError::TooSlow { .. } => {
                Status::deadline_exceeded(msg)
            }
            RegistryError::PlainHttpCredentials { .. } => Status::failed_precondition(msg),
            RegistryError::Status { .. } | RegistryError::Transport { .. } => {
                Status::unavailable(msg)
            }
        },
        Error::Db(_) | Error::Io(_) => Status::internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn codes_say_what_happened() {
        let layer = |hostile| Error::Layer {
            image: "i".into(),
            layer: "sha256:l".into(),
            reason: "r".into(),
            hostile,
        };
        let s = status(Error::NotFound("busybox".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "image \"busybox\" not found");
        assert_eq!(
            status(Error::Pinned("p".into())).code(),
            Code::FailedPrecondition
        );
        assert_eq!(status(layer(true)).code(), Code::InvalidArgument);
        assert_eq!(status(layer(false)).code(), Code::Internal);
        let denied = Error::Registry {
            image: "i".into(),
            source: RegistryError::BadCredentials("bad"),
        };
        assert_eq!(status(denied).code(), Code::InvalidArgument);
    }
}
