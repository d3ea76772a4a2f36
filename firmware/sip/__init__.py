"""SIP: transports, transactions, dialogs, registrar and authentication, sans-I/O at the core."""
