# The module against LocalStack (Pro, or any endpoint that emulates S3, RDS, Lambda, API Gateway
# and CloudFront): the AWS provider's endpoints point at it. The free LocalStack that
# localstack/up starts emulates S3, Secrets Manager and SSM only; with it, run the functions
# on the host instead (see localstack/README.md).

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80"
    }
  }
}

variable "localstack_endpoint" {
  description = "LocalStack's edge endpoint."
  type        = string
  default     = "http://127.0.0.1:4566"
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  s3_use_path_style           = true
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true

  endpoints {
    apigatewayv2   = var.localstack_endpoint
    cloudfront     = var.localstack_endpoint
    cloudwatchlogs = var.localstack_endpoint
    ec2            = var.localstack_endpoint
    iam            = var.localstack_endpoint
    kms            = var.localstack_endpoint
    lambda         = var.localstack_endpoint
    rds            = var.localstack_endpoint
    s3             = var.localstack_endpoint
    secretsmanager = var.localstack_endpoint
    ssm            = var.localstack_endpoint
    sts            = var.localstack_endpoint
  }
}

module "stowage" {
  source = "../../modules/stowage"

  name                  = "stowage"
  vpc_id                = "vpc-0123456789abcdef0"
  private_subnet_ids    = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
  lambda_zip_dir        = "${path.root}/../../../target/lambda"
  force_destroy_buckets = true
  deletion_protection   = false
  aurora_instance_count = 1
}

output "api_url" {
  description = "Stowage's API on LocalStack."
  value       = module.stowage.api_url
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
