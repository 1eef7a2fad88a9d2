# The Lambda deployment: one HTTP API in front of the three functions, routing by method and path the way
# stowage_api::http::Part splits the API. Stowage authenticates every request itself (the admin
# token), so the routes carry no API Gateway authorizer.

locals {
  routes = {
    "PUT /{proxy+}"                   = "upload"
    "POST /api/uploads"               = "upload"
    "POST /api/uploads/{id}/complete" = "upload"
    "DELETE /api/uploads/{id}"        = "upload"
    "GET /{proxy+}"                   = "download"
    "HEAD /{proxy+}"                  = "download"
    "ANY /api/{proxy+}"               = "metadata"
    "GET /ui/{proxy+}"                = "metadata"
    "DELETE /{proxy+}"                = "metadata"
  }
}

resource "aws_apigatewayv2_api" "stowage" {
  count = local.lambda ? 1 : 0

  name          = var.name
  protocol_type = "HTTP"
  description   = "Stowage binary store"
  tags          = local.tags
}

resource "aws_cloudwatch_log_group" "api" {
  count = local.lambda ? 1 : 0

  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

resource "aws_apigatewayv2_stage" "default" {
  count = local.lambda ? 1 : 0

  api_id      = aws_apigatewayv2_api.stowage[0].id
  name        = "$default"
  auto_deploy = true
  tags        = local.tags

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api[0].arn
    format = jsonencode({
      requestId = "$context.requestId"
      ip        = "$context.identity.sourceIp"
      method    = "$context.httpMethod"
      path      = "$context.path"
      status    = "$context.status"
      latency   = "$context.responseLatency"
      function  = "$context.integration.status"
    })
  }

  default_route_settings {
    throttling_burst_limit = 1000
    throttling_rate_limit  = 500
  }
}

resource "aws_apigatewayv2_integration" "function" {
  for_each = local.functions

  api_id                 = aws_apigatewayv2_api.stowage[0].id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.function[each.key].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = var.function_timeout_seconds * 1000
}

resource "aws_apigatewayv2_route" "route" {
  for_each = local.lambda ? local.routes : {}

  api_id             = aws_apigatewayv2_api.stowage[0].id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.function[each.value].id}"
  authorization_type = "NONE"
}

resource "aws_lambda_permission" "api" {
  for_each = local.functions

  statement_id  = "AllowHttpApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.function[each.key].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.stowage[0].execution_arn}/*/*"
}
