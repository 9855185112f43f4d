//! Signed remote configuration (issue 14): the document format and its verification, and the
//! central team's tools (`storegw keygen`, `sign`, `verify`, `push`). The daemon does not
//! subscribe to configuration topics yet (docs/fleet.md, "Not yet implemented").

pub mod document;
pub mod tools;
