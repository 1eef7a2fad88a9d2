# The container deployment: `stowage serve` tasks on ECS Fargate behind an application load
# balancer with sticky sessions, each task with its own EBS volume for the eventual queue,
# autoscaling between 2 and 6 tasks, one bucket, Aurora Serverless v2. The primary task runs
# garbage collection and balancing; a CloudWatch agent beside each task publishes its queue's
# figures, on which the queue-age alarm watches.
#
#   docker build -f infra/Dockerfile --target stowage -t <registry>/stowage:<version> .
#   docker push <registry>/stowage:<version>
#   terraform init && terraform apply -var vpc_id=vpc-… \
#     -var 'private_subnet_ids=["subnet-…","subnet-…"]' -var 'public_subnet_ids=["subnet-…","subnet-…"]' \
#     -var image=<registry>/stowage:<version> -var certificate_arn=arn:aws:acm:…

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
  description = "VPC for the database, the tasks and the load balancer."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets in two or more availability zones, for the database and the tasks."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Public subnets in two or more availability zones, for the load balancer."
  type        = list(string)
}

variable "image" {
  description = "The image of infra/Dockerfile's `stowage` target, pushed to a registry the tasks can pull from."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate of the load balancer's HTTPS listener (the name clients use)."
  type        = string
}

variable "alarm_topic_arn" {
  description = "SNS topic the alarms notify (null: the alarms only show in the console)."
  type        = string
  default     = null
}

module "stowage" {
  source = "../../modules/stowage"

  name               = "stowage"
  deployment         = "container"
  vpc_id             = var.vpc_id
  private_subnet_ids = var.private_subnet_ids
  database_pool_size = 8

  container = {
    image             = var.image
    public_subnet_ids = var.public_subnet_ids
    certificate_arn   = var.certificate_arn
    min_tasks         = 2
    max_tasks         = 6
    queue_volume_gb   = 20
  }

  maintenance = {
    gc_every_hours = 4
  }

  alarm_actions = compact([var.alarm_topic_arn])
}

output "api_url" {
  description = "Stowage's API (the load balancer; point the certificate's name at it)."
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

output "ecs_service" {
  description = "The ECS cluster and service."
  value       = module.stowage.ecs_service
}
