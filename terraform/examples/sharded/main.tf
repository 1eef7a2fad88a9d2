# Three shard buckets with two copies of each binary (template s3-sharding), RDS Proxy in front
# of Aurora for many concurrent functions, a customer-managed KMS key.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "eu-west-1"
}

variable "vpc_id" {
  description = "VPC for the database and the functions."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets in two or more availability zones."
  type        = list(string)
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "key" {
  statement {
    sid       = "AccountAdministersTheKey"
    actions   = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:TagResource", "kms:UntagResource"]
    resources = ["arn:aws:kms:${var.region}:${data.aws_caller_identity.current.account_id}:key/*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsUsesTheKey"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = ["arn:aws:kms:${var.region}:${data.aws_caller_identity.current.account_id}:key/*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "stowage" {
  description             = "Stowage binaries, logs and secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
}

module "stowage" {
  source = "../../modules/stowage"

  name               = "stowage"
  shard_count        = 3
  redundancy         = 2
  enable_rds_proxy   = true
  kms_key_arn        = aws_kms_key.stowage.arn
  vpc_id             = var.vpc_id
  private_subnet_ids = var.private_subnet_ids
  lambda_zip_dir     = "${path.root}/../../../target/lambda"
  aurora_capacity = {
    min = 0.5
    max = 16
  }
}

output "api_url" {
  description = "Stowage's API."
  value       = module.stowage.api_url
}

output "bucket_names" {
  description = "The shard buckets."
  value       = module.stowage.bucket_names
}

output "admin_token_secret_arn" {
  description = "The Secrets Manager secret holding the admin token."
  value       = module.stowage.admin_token_secret_arn
}

output "cloudfront_domain_name" {
  description = "The CloudFront distribution's domain (null without the CloudFront keys)."
  value       = module.stowage.cloudfront_domain_name
}

output "migrate_exports" {
  description = "Shell lines for `stowage migrate`: eval \"$(terraform output -raw migrate_exports)\"."
  value       = module.stowage.migrate_exports
}
