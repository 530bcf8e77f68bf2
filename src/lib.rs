//! entlog
