"""What every request passes through first and what people see: the outermost middleware
(request ids, rendering every GatewayError in one place) and the HTML pages.
"""
