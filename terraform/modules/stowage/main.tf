# Stowage on AWS: S3 shard buckets, Aurora Serverless v2 (PostgreSQL), the upload, download and
# metadata functions behind an HTTP API, and CloudFront for signed downloads. See README.md.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
  partition = data.aws_partition.current.partition

  lambda    = var.deployment == "lambda"
  container = var.deployment == "container"
  # The Lambda functions, none in the container deployment (for_each over them makes nothing).
  functions = local.lambda ? toset(["upload", "download", "metadata"]) : toset([])
  shards    = { for i in range(var.shard_count) : format("shard-%02d", i + 1) => format("%s-%s-%s-%02d", var.name, local.account, local.region, i + 1) }
  sharded   = var.shard_count > 1
  cdn       = var.cloudfront_public_key_pem != null

  staging_prefix = "${var.bucket_prefix_path}/_pre/"

  # The configuration every function reads from STOWAGE_CONFIG_TOML (Stowage's TOML, the same
  # keys as a stowage.toml file). Secrets travel as references, resolved at cold start.
  s3_section = join("\n", compact([
    "[filestore.s3]",
    "bucketName = \"${values(local.shards)[0]}\"",
    "region = \"${local.region}\"",
    "path = \"${var.bucket_prefix_path}\"",
    "testConnection = false",
    var.kms_key_arn == null ? "serverSideEncryption = \"AES256\"" : "serverSideEncryption = \"aws:kms\"\nkmsServerSideEncryptionKeyId = \"${var.kms_key_arn}\"",
    local.cdn ? "cloudFrontDomainName = \"${aws_cloudfront_distribution.downloads[0].domain_name}\"" : "",
    local.cdn ? "cloudFrontKeyPairId = \"${aws_cloudfront_public_key.downloads[0].id}\"" : "",
    local.cdn ? "cloudFrontPrivateKey = \"secretsmanager:${var.cloudfront_private_key_secret_arn}\"" : "",
  ]))
  sharding_section = local.sharded ? join("\n", [
    "[filestore.sharding]",
    "redundancy = ${var.redundancy}",
    "mounts = [",
    join(",\n", [for id, bucket in local.shards : "  { id = \"${id}\", s3 = { bucketName = \"${bucket}\" } }"]),
    "]",
  ]) : ""
  config_toml = join("\n", compact([
    "[database]",
    "max_connections = ${var.database_pool_size}",
    "[filestore]",
    "template = \"${local.sharded ? "s3-sharding" : "s3-storage-v3-direct"}\"",
    local.s3_section,
    local.sharding_section,
  ]))

  # The container deployment's tasks: one bucket goes through each task's eventual queue on
  # its EBS disk (cluster-s3-storage-v3), uploaded before the task exits; the primary node runs
  # garbage collection and balancing on var.maintenance's intervals; metrics for the agent
  # beside it on a loopback listener.
  container_config_toml = join("\n", compact([
    "[database]",
    "max_connections = ${var.database_pool_size}",
    "[gc]",
    "interval_secs = ${var.maintenance.gc_every_hours * 3600}",
    "[metrics]",
    "listen = \"127.0.0.1:${local.metrics_port}\"",
    "[filestore]",
    "template = \"${local.sharded ? "s3-sharding" : local.queued ? "cluster-s3-storage-v3" : "s3-storage-v3-direct"}\"",
    local.s3_section,
    local.queued ? "[filestore.eventual]\ndrainOnShutdownSecs = ${try(var.container.queue_drain_seconds, 100)}" : "",
    local.sharding_section,
    local.sharded ? "balancingInterval = ${var.maintenance.balance_every_hours * 3600000}" : "",
  ]))
  metrics_port = 9464
  queued       = !local.sharded && try(var.container.eventual_queue, true)

  database_host = var.enable_rds_proxy ? aws_db_proxy.stowage[0].endpoint : aws_rds_cluster.stowage.endpoint
  environment = { for k, v in merge(
    {
      STOWAGE_CONFIG_TOML       = local.config_toml
      STOWAGE_DATABASE_URL      = "postgres://${var.database_username}@${local.database_host}:5432/${var.database_name}?sslmode=require"
      STOWAGE_DATABASE_PASSWORD = "secretsmanager:${aws_rds_cluster.stowage.master_user_secret[0].secret_arn}#password"
      STOWAGE_LOG_FORMAT        = "json"
      STOWAGE_BASE_URL          = var.base_url
    },
    var.extra_environment,
  ) : k => v if v != null }

  tags = merge({ "app" = "stowage", "stowage:name" = var.name }, var.tags)
}

check "redundancy_fits_the_shards" {
  assert {
    condition     = var.redundancy <= var.shard_count
    error_message = "redundancy (${var.redundancy}) must not exceed shard_count (${var.shard_count})."
  }
}

check "cloudfront_needs_its_private_key" {
  assert {
    condition     = (var.cloudfront_public_key_pem == null) == (var.cloudfront_private_key_secret_arn == null)
    error_message = "cloudfront_public_key_pem and cloudfront_private_key_secret_arn go together."
  }
}

check "a_deployment_has_what_it_runs" {
  assert {
    condition     = local.lambda ? var.lambda_zip_dir != null : var.container != null
    error_message = "deployment = \"lambda\" needs lambda_zip_dir; deployment = \"container\" needs container."
  }
}

check "replication_names_every_shard" {
  assert {
    condition     = var.replication_destination_bucket_arns == null || (var.bucket_versioning && alltrue([for id in keys(local.shards) : contains(keys(coalesce(var.replication_destination_bucket_arns, {})), id)]))
    error_message = "replication_destination_bucket_arns needs a DR bucket for every shard (shard-01, …) and bucket_versioning = true."
  }
}

check "versions_outlive_database_backups" {
  assert {
    condition     = !var.bucket_versioning || var.noncurrent_version_retention_days >= var.aurora_backup_retention_days
    error_message = "noncurrent_version_retention_days must be at least aurora_backup_retention_days: an older database snapshot would name binaries whose versions are gone."
  }
}

check "cloudfront_serves_one_bucket" {
  assert {
    condition     = var.cloudfront_public_key_pem == null || var.shard_count == 1
    error_message = "CloudFront signed downloads serve one bucket: use shard_count = 1 with CloudFront, or no CloudFront (S3 presigned redirects) with shards."
  }
}
