//! Policy: catalog entities → route table; request + identity → decision. (In progress.)
