"""Use cases, a module per resource: the rules of each operation and the transactions they run in.

Connections are opened here (through `writes.perform` for writes), never in handlers; queries never open one.
"""
