"""Runtime side of the media analysis database: settings, local server, checks."""
