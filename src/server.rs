//! Accept loop. (In progress.)
