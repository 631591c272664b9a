"""What the tests (and the bench) share: builders, fakes of what Tripmail talks to, and the stack's launcher."""
