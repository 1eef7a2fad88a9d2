# The upload, download and metadata functions: one role each, allowed only what its part of
# the API does, on the binaries' prefix of the shard buckets.

locals {
  bucket_arns = [for b in aws_s3_bucket.shard : b.arn]
  binary_arns = [for b in aws_s3_bucket.shard : "${b.arn}/${var.bucket_prefix_path}/*"]

  # What each function does with the buckets.
  s3_actions = {
    # Deploys and presigned sessions: write create-only, read back to verify, copy from
    # staging, remove staging objects, abort multipart uploads.
    upload = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    # Downloads: read, and sign redirects (a presigned GET is signed by this role).
    download = ["s3:GetObject"]
    # Storage info and searches read; deletes only move records to the trash.
    metadata = ["s3:GetObject"]
  }
  # Every function stays inside the binaries' prefix (staging objects live under it too).
  s3_resources = {
    upload   = local.binary_arns
    download = local.binary_arns
    metadata = local.binary_arns
  }

  secret_arns = {
    upload   = [aws_rds_cluster.stowage.master_user_secret[0].secret_arn]
    download = compact([aws_rds_cluster.stowage.master_user_secret[0].secret_arn, var.cloudfront_private_key_secret_arn])
    metadata = [aws_rds_cluster.stowage.master_user_secret[0].secret_arn]
  }
}

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each = local.functions

  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "function" {
  for_each = local.functions

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }

  statement {
    sid       = "Binaries"
    actions   = local.s3_actions[each.key]
    resources = local.s3_resources[each.key]
  }

  statement {
    sid       = "ListBinaries"
    actions   = ["s3:ListBucket"]
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
    resources = local.secret_arns[each.key]
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

resource "aws_iam_role_policy" "function" {
  for_each = local.functions

  name   = "stowage-${each.key}"
  role   = aws_iam_role.function[each.key].id
  policy = data.aws_iam_policy_document.function[each.key].json
}

# Network interfaces in the VPC (actions that take no resource scope, hence the managed policy).
resource "aws_iam_role_policy_attachment" "function_vpc" {
  for_each = local.functions

  role       = aws_iam_role.function[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_cloudwatch_log_group" "function" {
  for_each = local.functions

  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

resource "aws_lambda_function" "function" {
  for_each = local.functions

  function_name                  = "${var.name}-${each.key}"
  description                    = "Stowage ${each.key} function"
  role                           = aws_iam_role.function[each.key].arn
  filename                       = "${var.lambda_zip_dir}/${each.key}/bootstrap.zip"
  source_code_hash               = filebase64sha256("${var.lambda_zip_dir}/${each.key}/bootstrap.zip")
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.lambda_architecture]
  memory_size                    = var.function_memory_mb[each.key]
  timeout                        = var.function_timeout_seconds
  reserved_concurrent_executions = var.function_reserved_concurrency
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
    log_group  = aws_cloudwatch_log_group.function[each.key].name
  }

  depends_on = [aws_iam_role_policy.function, aws_iam_role_policy_attachment.function_vpc]
}
