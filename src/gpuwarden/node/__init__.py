"""The node daemon: poller, job mapper, exposition and HTTP app."""
