//! The control words berthd writes, one byte each, to a created
//! container's start FIFO ([`super::state::START_FIFO`]); the monitor
//! reads them while the container is CREATED.

/// What berthd tells the monitor of a created container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Start the container's process (CRI StartContainer).
    Start,
    /// Kill the created, never started, process (StopContainer).
    Kill,
}

impl Control {
    const ALL: [Control; 2] = [Control::Start, Control::Kill];

    /// The byte on the FIFO.
    pub fn byte(self) -> u8 {
        match self {
            Control::Start => b's',
            Control::Kill => b'k',
        }
    }

    /// The word a byte read from the FIFO means; None for any other byte.
    pub fn from_byte(b: u8) -> Option<Control> {
        Control::ALL.into_iter().find(|c| c.byte() == b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_others_mean_nothing() {
        for c in Control::ALL {
            assert_eq!(Control::from_byte(c.byte()), Some(c));
        }
        assert_ne!(Control::Start.byte(), Control::Kill.byte());
        assert_eq!(Control::from_byte(0), None);
        assert_eq!(Control::from_byte(b'x'), None);
    }
}
