# Scheduled maintenance of the Lambda deployment. It has no primary node whose own schedule
# would collect garbage, purge the trash past its retention or balance the shards, so
# EventBridge Scheduler invokes the maintenance function (the metadata function's code, with a
# longer timeout than the HTTP API allows and one instance at a time) with a maintenance event:
# {"stowage_maintenance": "gc"} (trash retention, unreferenced binaries, then balancing) and,
# on a sharded store, {"stowage_maintenance": "balance"}. A run takes the task's named lock in
# the database, so runs never overlap; one cut short by the timeout is safe to repeat.
# The container deployment needs none of this: its primary node runs both (see ecs.tf).

locals {
  schedules = local.lambda ? merge(
    { gc = var.maintenance.gc_every_hours },
    local.sharded ? { balance = var.maintenance.balance_every_hours } : {},
  ) : {}
}

resource "aws_iam_role" "maintenance" {
  count = local.lambda ? 1 : 0

  name               = "${var.name}-maintenance"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "maintenance" {
  count = local.lambda ? 1 : 0

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.maintenance[0].arn}:*"]
  }

  # Collection deletes binaries and sweeps staging; balancing copies between shards.
  statement {
    sid       = "Binaries"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = local.binary_arns
  }

  statement {
    sid       = "ListBinaries"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = local.bucket_arns
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.bucket_prefix_path}/*"]
    }
  }

  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_rds_cluster.stowage.master_user_secret[0].secret_arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [1]
    content {
      sid       = "Kms"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
    }
  }

  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["arn:${local.partition}:xray:${local.region}:${local.account}:group/Default/*"]
  }
}

resource "aws_iam_role_policy" "maintenance" {
  count = local.lambda ? 1 : 0

  name   = "stowage-maintenance"
  role   = aws_iam_role.maintenance[0].id
  policy = data.aws_iam_policy_document.maintenance[0].json
}

resource "aws_iam_role_policy_attachment" "maintenance_vpc" {
  count = local.lambda ? 1 : 0

  role       = aws_iam_role.maintenance[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_cloudwatch_log_group" "maintenance" {
  count = local.lambda ? 1 : 0

  name              = "/aws/lambda/${var.name}-maintenance"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

resource "aws_lambda_function" "maintenance" {
  count = local.lambda ? 1 : 0

  function_name    = "${var.name}-maintenance"
  description      = "Stowage scheduled maintenance (the metadata function's code): garbage collection, trash retention, balancing"
  role             = aws_iam_role.maintenance[0].arn
  filename         = "${var.lambda_zip_dir}/metadata/bootstrap.zip"
  source_code_hash = filebase64sha256("${var.lambda_zip_dir}/metadata/bootstrap.zip")
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  memory_size      = var.function_memory_mb.metadata
  timeout          = var.maintenance.timeout_seconds
  # One run at a time (the database lock would make a second one wait anyway).
  reserved_concurrent_executions = 1
  kms_key_arn                    = var.kms_key_arn
  tags                           = local.tags

  environment {
    variables = local.environment
  }

  vpc_config {
    subnet_ids         = var.private_subnet_ids
    security_group_ids = [aws_security_group.functions.id]
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.maintenance[0].name
  }

  depends_on = [aws_iam_role_policy.maintenance, aws_iam_role_policy_attachment.maintenance_vpc]
}

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  count = local.lambda ? 1 : 0

  name               = "${var.name}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "scheduler" {
  count = local.lambda ? 1 : 0

  statement {
    sid       = "InvokeMaintenance"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.maintenance[0].arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  count = local.lambda ? 1 : 0

  name   = "invoke-maintenance"
  role   = aws_iam_role.scheduler[0].id
  policy = data.aws_iam_policy_document.scheduler[0].json
}

resource "aws_scheduler_schedule" "maintenance" {
  for_each = local.schedules

  name                         = "${var.name}-${each.key}"
  description                  = "Stowage ${each.key == "gc" ? "garbage collection (with the trash's retention, then balancing)" : "balancing"} every ${each.value} hours"
  schedule_expression          = each.value == 1 ? "rate(1 hour)" : "rate(${each.value} hours)"
  schedule_expression_timezone = "UTC"
  kms_key_arn                  = var.kms_key_arn

  flexible_time_window {
    mode                      = "FLEXIBLE"
    maximum_window_in_minutes = 15
  }

  target {
    arn      = aws_lambda_function.maintenance[0].arn
    role_arn = aws_iam_role.scheduler[0].arn
    input    = jsonencode({ stowage_maintenance = each.key })

    retry_policy {
      maximum_retry_attempts       = 2
      maximum_event_age_in_seconds = 3600
    }
  }
}
