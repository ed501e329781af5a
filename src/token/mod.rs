//! Token verification: bearer token → verified `Identity` or a `Reason`. (In progress.)
