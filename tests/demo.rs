//! The README's first command: `storegw demo` runs the whole pipeline against the embedded
//! rumqttd broker and reports what a subscriber received.

use std::process::Command;

#[test]
fn demo_delivers_every_kind_through_the_embedded_broker() -> Result<(), Box<dyn std::error::Error>>
{
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args(["demo", "--duration", "3", "--rate", "400"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in storegw::event::KINDS {
        assert!(
            text.contains(kind),
            "no {kind} in the demo summary:\n{text}"
        );
    }
    assert!(text.contains("sample event"), "{text}");
    Ok(())
}
