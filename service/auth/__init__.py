"""The request edge: what a request must carry to reach a secured resource, and how it is checked."""
