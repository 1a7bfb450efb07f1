"""What every peerpods daemon shares at run time: the error root, one settings and flag
system, the event loop, sd_notify and the TLS profiles. Imports nothing else from the project.
"""
