//! One HAProxy connection. (In progress.)
