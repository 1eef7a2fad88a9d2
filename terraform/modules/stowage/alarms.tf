# CloudWatch alarms on what an operator must hear about: the API answering 5xx (the HTTP API
# for Lambda, the load balancer for containers), a function or the maintenance failing, a
# node's eventual queue not draining (container), and the database running out of connections. Their actions are the ARNs given in
# var.alarm_actions (an SNS topic, an incident tool); with none, the alarms only show in the
# console.

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  count = local.lambda ? 1 : 0

  alarm_name          = "${var.name}-api-5xx"
  alarm_description   = "Stowage's HTTP API answered more than ${var.alarm_5xx_per_5_minutes} 5xx in 5 minutes"
  namespace           = "AWS/ApiGateway"
  metric_name         = "5xx"
  dimensions          = { ApiId = aws_apigatewayv2_api.stowage[0].id, Stage = aws_apigatewayv2_stage.default[0].name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_5xx_per_5_minutes
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "function_errors" {
  for_each            = local.functions
  alarm_name          = "${var.name}-${each.key}-errors"
  alarm_description   = "The ${each.key} function failed (errors, timeouts) in two 5-minute periods running"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.function[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "database_connections" {
  alarm_name          = "${var.name}-database-connections"
  alarm_description   = "The metadata database holds more than ${var.alarm_database_connections} connections: functions may soon wait for one (503)"
  namespace           = "AWS/RDS"
  metric_name         = "DatabaseConnections"
  dimensions          = { DBClusterIdentifier = aws_rds_cluster.stowage.cluster_identifier }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_database_connections
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "maintenance_errors" {
  count = local.lambda ? 1 : 0

  alarm_name          = "${var.name}-maintenance-errors"
  alarm_description   = "Scheduled maintenance (garbage collection, trash retention, balancing) failed"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.maintenance[0].function_name }
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "load_balancer_5xx" {
  count = local.container ? 1 : 0

  alarm_name          = "${var.name}-tasks-5xx"
  alarm_description   = "Stowage's tasks answered more than ${var.alarm_5xx_per_5_minutes} 5xx in 5 minutes"
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_Target_5XX_Count"
  dimensions          = { LoadBalancer = aws_lb.stowage[0].arn_suffix, TargetGroup = aws_lb_target_group.stowage[0].arn_suffix }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_5xx_per_5_minutes
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "no_healthy_task" {
  count = local.container ? 1 : 0

  alarm_name          = "${var.name}-no-healthy-task"
  alarm_description   = "No Stowage task is ready (readiness: the database, the backend, the locks, the queue disk)"
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.stowage[0].arn_suffix, TargetGroup = aws_lb_target_group.stowage[0].arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}

# Published by the CloudWatch agent beside each task (ecs.tf), from the task's metrics.
resource "aws_cloudwatch_metric_alarm" "queue_age" {
  count = local.container ? 1 : 0

  alarm_name          = "${var.name}-queue-age"
  alarm_description   = "A task's eventual queue holds a binary older than ${var.alarm_queue_age_seconds} s: S3 is not taking its uploads"
  namespace           = "Stowage"
  metric_name         = "stowage_queue_oldest_age_seconds"
  dimensions          = { service = var.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_queue_age_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}
