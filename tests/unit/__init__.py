"""The fast lane: in-process tests. Code is called directly or through Werkzeug's test
client; sockets are at most a socket pair or a loopback listener the test itself holds, or
the simulator in a thread. No subprocess, no gunicorn, no fork."""
