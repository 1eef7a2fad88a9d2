# The smallest deployment: one bucket, Aurora Serverless v2, the three functions behind an HTTP
# API, downloads redirected to S3 presigned URLs (no CloudFront).
#
#   infra/package-lambdas                  # builds target/lambda/<function>/bootstrap.zip
#   terraform init && terraform apply -var vpc_id=vpc-… -var 'private_subnet_ids=["subnet-…","subnet-…"]'

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

module "stowage" {
  source = "../../modules/stowage"

  name               = "stowage"
  vpc_id             = var.vpc_id
  private_subnet_ids = var.private_subnet_ids
  lambda_zip_dir     = "${path.root}/../../../target/lambda"
}

output "api_url" {
  description = "Stowage's API."
  value       = module.stowage.api_url
}

output "migrate_environment" {
  description = "Environment for `stowage migrate`."
  value       = module.stowage.migrate_environment
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
