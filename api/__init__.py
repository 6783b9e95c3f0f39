"""The loopback automation API (behind the hook_server.py door): the server and its bounded
handler pool (api.server, api.pool), the routes and their validation (api.routes,
api.handler, api.validation), the event stream (api.sse), and the stdlib client
(api.client). Importing the package runs nothing.
"""
