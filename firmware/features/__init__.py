"""Call features that run over channels: the routing graph and its node kinds.

Each node kind (hunt group, queue, menu, DISA, ...) is a coroutine in its own module,
given a `NodeContext` (the call, its caller, and the call-control verbs it may use) and
returning the next destination. See docs/routing.md.
"""
