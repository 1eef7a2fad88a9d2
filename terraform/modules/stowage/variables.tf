variable "name" {
  description = "Prefix of every resource name (buckets add the account id and region to stay globally unique)."
  type        = string
  default     = "stowage"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,23}$", var.name))
    error_message = "name must be 3-24 characters: lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "shard_count" {
  description = "Number of S3 buckets binaries are stored in. 1 uses the s3-storage-v3-direct template; more use s3-sharding with one mount per bucket."
  type        = number
  default     = 1

  validation {
    condition     = var.shard_count >= 1 && var.shard_count <= 16 && floor(var.shard_count) == var.shard_count
    error_message = "shard_count must be a whole number from 1 to 16."
  }
}

variable "redundancy" {
  description = "Copies of each binary across the shard buckets (sharding's redundancy); at most shard_count."
  type        = number
  default     = 1

  validation {
    condition     = var.redundancy >= 1 && floor(var.redundancy) == var.redundancy
    error_message = "redundancy must be a whole number of at least 1."
  }
}

variable "bucket_prefix_path" {
  description = "Key prefix of the binaries inside each bucket (the S3 provider's path)."
  type        = string
  default     = "binaries"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9/_-]*[a-z0-9]$", var.bucket_prefix_path))
    error_message = "bucket_prefix_path must be a relative key prefix such as \"binaries\" (no leading or trailing slash)."
  }
}

variable "force_destroy_buckets" {
  description = "Let terraform destroy delete buckets that still hold binaries. Keep false outside test accounts."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "A customer-managed KMS key for the buckets (SSE-KMS), the log groups, the secrets and the functions' environment. Null uses SSE-S3 and AWS-managed keys."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:…)."
  }
}

variable "staging_expiration_days" {
  description = "Days after which staging objects (uploads that never completed, under <prefix>/_pre/) are deleted by the bucket lifecycle."
  type        = number
  default     = 2

  validation {
    condition     = var.staging_expiration_days >= 1
    error_message = "staging_expiration_days must be at least 1: an upload session may run for hours."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which incomplete multipart uploads are aborted by the bucket lifecycle."
  type        = number
  default     = 1

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1
    error_message = "abort_incomplete_multipart_days must be at least 1."
  }
}

variable "vpc_id" {
  description = "VPC of the database and the functions."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123abcd."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets (two or more availability zones) for the database and the functions; they need a route to S3 and Secrets Manager (VPC endpoints or a NAT gateway)."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids needs at least two subnets in different availability zones (Aurora requires it)."
  }
}

variable "database_name" {
  description = "Name of the PostgreSQL database Stowage uses."
  type        = string
  default     = "stowage"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must start with a letter and hold lower-case letters, digits and underscores."
  }
}

variable "database_username" {
  description = "Master user of the Aurora cluster; its password is managed by RDS in Secrets Manager."
  type        = string
  default     = "stowage"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,15}$", var.database_username))
    error_message = "database_username must be 1-16 characters: lower-case letters, digits and underscores, starting with a letter."
  }
}

variable "aurora_engine_version" {
  description = "Aurora PostgreSQL engine version (Serverless v2 capable)."
  type        = string
  default     = "16.4"
}

variable "aurora_capacity" {
  description = "Aurora Serverless v2 capacity range in ACUs."
  type = object({
    min = number
    max = number
  })
  default = {
    min = 0.5
    max = 4
  }

  validation {
    condition     = var.aurora_capacity.min >= 0 && var.aurora_capacity.max <= 256 && var.aurora_capacity.min <= var.aurora_capacity.max
    error_message = "aurora_capacity needs 0 <= min <= max <= 256 ACUs."
  }
}

variable "aurora_instance_count" {
  description = "Aurora instances: 1 writer plus readers for failover."
  type        = number
  default     = 2

  validation {
    condition     = var.aurora_instance_count >= 1 && var.aurora_instance_count <= 16
    error_message = "aurora_instance_count must be from 1 to 16."
  }
}

variable "deletion_protection" {
  description = "Protect the Aurora cluster from deletion."
  type        = bool
  default     = true
}

variable "enable_rds_proxy" {
  description = "Put an RDS Proxy between the functions and Aurora: connection pooling for many concurrent Lambda instances."
  type        = bool
  default     = false
}

variable "deployment" {
  description = "How Stowage runs: \"lambda\" (the upload, download and metadata functions behind an HTTP API) or \"container\" (an ECS service of `stowage serve` tasks behind an ALB, each with its own EBS queue disk; see var.container)."
  type        = string
  default     = "lambda"

  validation {
    condition     = contains(["lambda", "container"], var.deployment)
    error_message = "deployment must be \"lambda\" or \"container\"."
  }
}

variable "lambda_zip_dir" {
  description = "Directory holding <function>/bootstrap.zip for upload, download and metadata, as infra/package-lambdas builds them (target/lambda). Required with deployment = \"lambda\"."
  type        = string
  default     = null
}

variable "container" {
  description = "The container deployment (deployment = \"container\"): the image of infra/Dockerfile's `stowage` target, the ALB's public subnets and certificate, task size, the number of tasks autoscaling keeps between, each task's EBS queue disk and how long a stopping task uploads its queue (eventual_queue = false acknowledges uploads only once S3 has them: no queue to lose with a task that dies without SIGTERM, see docs/durability.md); the CloudWatch agent and disk-preparing images (pin their versions in production); a bucket for the load balancer's access logs (optional)."
  type = object({
    image               = string
    public_subnet_ids   = list(string)
    certificate_arn     = string
    allowed_cidrs       = optional(list(string), ["0.0.0.0/0"])
    cpu                 = optional(number, 1024)
    memory_mb           = optional(number, 2048)
    min_tasks           = optional(number, 2)
    max_tasks           = optional(number, 6)
    cpu_target_percent  = optional(number, 60)
    queue_volume_gb     = optional(number, 20)
    queue_drain_seconds = optional(number, 100)
    eventual_queue      = optional(bool, true)
    agent_image         = optional(string, "public.ecr.aws/cloudwatch-agent/cloudwatch-agent:latest")
    init_image          = optional(string, "public.ecr.aws/docker/library/busybox:1.37")
    access_logs_bucket  = optional(string)
  })
  default = null

  validation {
    condition = var.container == null ? true : (
      var.container.min_tasks >= 1 && var.container.min_tasks <= var.container.max_tasks
      && var.container.queue_volume_gb >= 1 && var.container.queue_volume_gb <= 16384
      && var.container.queue_drain_seconds >= 0 && var.container.queue_drain_seconds <= 110
      && length(var.container.public_subnet_ids) >= 2
    )
    error_message = "container needs 1 <= min_tasks <= max_tasks, queue_volume_gb from 1 to 16384, queue_drain_seconds from 0 to 110 (ECS waits at most 120 s after SIGTERM) and two or more public subnets for the ALB."
  }
}

variable "maintenance" {
  description = "How often garbage collection (with the trash's retention and the balancing after it) and balancing run. Lambda: EventBridge Scheduler invokes the maintenance function; container: the primary node runs them on these intervals."
  type = object({
    gc_every_hours      = optional(number, 24)
    balance_every_hours = optional(number, 6)
    timeout_seconds     = optional(number, 900)
  })
  default = {}

  validation {
    condition     = var.maintenance.gc_every_hours >= 1 && var.maintenance.balance_every_hours >= 1 && var.maintenance.timeout_seconds >= 60 && var.maintenance.timeout_seconds <= 900
    error_message = "maintenance needs gc_every_hours and balance_every_hours of at least 1, and timeout_seconds from 60 to 900 (Lambda's longest)."
  }
}

variable "lambda_architecture" {
  description = "Instruction set the zips were built for."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.lambda_architecture)
    error_message = "lambda_architecture must be x86_64 or arm64."
  }
}

variable "function_memory_mb" {
  description = "Memory of each function in MB (Lambda gives CPU in proportion)."
  type = object({
    upload   = number
    download = number
    metadata = number
  })
  default = {
    upload   = 1024
    download = 512
    metadata = 512
  }

  validation {
    condition     = alltrue([for m in values(var.function_memory_mb) : m >= 128 && m <= 10240])
    error_message = "function_memory_mb values must be from 128 to 10240."
  }
}

variable "function_timeout_seconds" {
  description = "Timeout of each function; an HTTP API waits at most 30 s."
  type        = number
  default     = 29

  validation {
    condition     = var.function_timeout_seconds >= 3 && var.function_timeout_seconds <= 30
    error_message = "function_timeout_seconds must be from 3 to 30 (the HTTP API's integration limit)."
  }
}

variable "function_reserved_concurrency" {
  description = "Reserved concurrency of each function, which also caps database connections (times the pool size)."
  type        = number
  default     = 50

  validation {
    condition     = var.function_reserved_concurrency >= 1
    error_message = "function_reserved_concurrency must be at least 1."
  }
}

variable "database_pool_size" {
  description = "Connections each function instance keeps to the database."
  type        = number
  default     = 2

  validation {
    condition     = var.database_pool_size >= 1 && var.database_pool_size <= 20
    error_message = "database_pool_size must be from 1 to 20."
  }
}

variable "log_retention_days" {
  description = "Retention of the functions' and the API's log groups, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, … 3653)."
  }
}

variable "cloudfront_public_key_pem" {
  description = "PEM public key of the trusted key group CloudFront checks signed download URLs with. Null disables CloudFront: downloads redirect to S3 presigned URLs."
  type        = string
  default     = null

  validation {
    condition     = var.cloudfront_public_key_pem == null || can(regex("BEGIN PUBLIC KEY", var.cloudfront_public_key_pem))
    error_message = "cloudfront_public_key_pem must be a PEM public key (-----BEGIN PUBLIC KEY-----)."
  }
}

variable "cloudfront_private_key_secret_arn" {
  description = "Secrets Manager secret holding the matching PEM private key, which the download function signs with. Required with cloudfront_public_key_pem."
  type        = string
  default     = null

  validation {
    condition     = var.cloudfront_private_key_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:", var.cloudfront_private_key_secret_arn))
    error_message = "cloudfront_private_key_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "cloudfront_price_class" {
  description = "CloudFront price class."
  type        = string
  default     = "PriceClass_100"

  validation {
    condition     = contains(["PriceClass_100", "PriceClass_200", "PriceClass_All"], var.cloudfront_price_class)
    error_message = "cloudfront_price_class must be PriceClass_100, PriceClass_200 or PriceClass_All."
  }
}

variable "base_url" {
  description = "Public base URL of the API for links in responses (a custom domain). Null derives it from each request's Host."
  type        = string
  default     = null

  validation {
    condition     = var.base_url == null || can(regex("^https://", var.base_url))
    error_message = "base_url must start with https://."
  }
}

variable "extra_environment" {
  description = "Additional STOWAGE_* environment variables for every function (for example STOWAGE_LOG)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : can(regex("^STOWAGE_[A-Z0-9_]+$", k))])
    error_message = "extra_environment keys must be STOWAGE_* variables."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "alarm_actions" {
  description = "ARNs notified when an alarm fires or clears (an SNS topic, say); empty: the alarms only show in the CloudWatch console."
  type        = list(string)
  default     = []
}

variable "alarm_5xx_per_5_minutes" {
  description = "5xx answers of the HTTP API in 5 minutes above which the api-5xx alarm fires."
  type        = number
  default     = 10
}

variable "alarm_database_connections" {
  description = "Connections to the metadata database above which the database-connections alarm fires: keep it below the engine's max_connections, which functions × database_pool_size must not reach."
  type        = number
  default     = 400
}

variable "alarm_queue_age_seconds" {
  description = "Age of the oldest binary in a node's eventual queue (container deployment) above which the queue-age alarm fires: the object store has not taken uploads for that long."
  type        = number
  default     = 900
}

variable "bucket_versioning" {
  description = "Version the shard buckets, so that what garbage collection deletes stays restorable for noncurrent_version_retention_days (database snapshots of that window then restore whole)."
  type        = bool
  default     = true
}

variable "noncurrent_version_retention_days" {
  description = "Days a deleted or overwritten object version is kept (the window in which an Aurora snapshot finds every binary it names); keep it at least aurora_backup_retention_days."
  type        = number
  default     = 35

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "object_lock" {
  description = "S3 Object Lock on the shard buckets (only when they are made): each object version is kept for days in GOVERNANCE or COMPLIANCE mode. Null: no lock."
  type = object({
    mode = string
    days = number
  })
  default = null

  validation {
    condition     = var.object_lock == null ? true : (contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock.mode) && var.object_lock.days >= 1)
    error_message = "object_lock.mode must be GOVERNANCE or COMPLIANCE, and object_lock.days at least 1."
  }
}

variable "replication_destination_bucket_arns" {
  description = "Cross-region replication: the DR bucket of each shard, by mount id (shard-01, …), made and versioned in the DR region. Null: no replication."
  type        = map(string)
  default     = null
}

variable "replication_kms_key_arn" {
  description = "KMS key in the DR region the replicas are encrypted with (with replication and SSE-KMS)."
  type        = string
  default     = null
}

variable "aurora_backup_retention_days" {
  description = "Days Aurora keeps automated backups (point-in-time restore window)."
  type        = number
  default     = 14

  validation {
    condition     = var.aurora_backup_retention_days >= 1 && var.aurora_backup_retention_days <= 35
    error_message = "aurora_backup_retention_days must be from 1 to 35."
  }
}

variable "aurora_backup_window" {
  description = "Daily UTC window of Aurora's automated backups (hh24:mi-hh24:mi)."
  type        = string
  default     = "03:00-04:00"
}

variable "aurora_global_cluster_identifier" {
  description = "Make an Aurora global database of this name with this cluster as its primary, for a standby region's secondary cluster to join. Null: none."
  type        = string
  default     = null
}
