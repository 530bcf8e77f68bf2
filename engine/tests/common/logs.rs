//! Log lines as a user's subscriber prints them (warnings and errors, no colours),
//! captured for the test to read. The subscriber is process-wide: one per test binary.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// What the subscriber printed.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs the process's subscriber (the first call) and returns what it prints.
    pub fn install() -> Captured {
        static OUT: OnceLock<Captured> = OnceLock::new();
        OUT.get_or_init(|| {
            let out = Captured::default();
            let writer = out.clone();
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::WARN)
                .with_writer(move || writer.clone())
                .init();
            out
        })
        .clone()
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
