# The shard buckets: private (public access blocked, owner-enforced), encrypted, TLS only,
# versioned (deleted binaries kept for a window), with lifecycle rules that abort incomplete
# multipart uploads, expire staging objects and old versions; optionally replicated to DR
# buckets and under Object Lock.

resource "aws_s3_bucket" "shard" {
  for_each = local.shards

  bucket        = each.value
  force_destroy = var.force_destroy_buckets
  # Object Lock can only be turned on when a bucket is made.
  object_lock_enabled = var.object_lock != null
  tags                = merge(local.tags, { "stowage:shard" = each.key })
}

resource "aws_s3_bucket_public_access_block" "shard" {
  for_each = aws_s3_bucket.shard

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "shard" {
  for_each = aws_s3_bucket.shard

  bucket = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "shard" {
  for_each = aws_s3_bucket.shard

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_versioning" "shard" {
  for_each = aws_s3_bucket.shard

  bucket = each.value.id
  versioning_configuration {
    # Keys are content digests written create-only, so versions hold exactly the bytes that
    # garbage collection (or a mistake) deleted: kept for noncurrent_version_retention_days,
    # they let an Aurora snapshot of that window be restored with every binary it names
    # (docs/durability.md, "Disaster recovery").
    status = var.bucket_versioning ? "Enabled" : "Suspended"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "shard" {
  for_each = var.object_lock == null ? {} : aws_s3_bucket.shard

  bucket = each.value.id
  rule {
    default_retention {
      mode = var.object_lock.mode
      days = var.object_lock.days
    }
  }
  depends_on = [aws_s3_bucket_versioning.shard]
}

resource "aws_s3_bucket_lifecycle_configuration" "shard" {
  for_each = aws_s3_bucket.shard

  bucket = each.value.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  rule {
    id     = "expire-staging-objects"
    status = "Enabled"
    filter {
      prefix = local.staging_prefix
    }
    expiration {
      days = var.staging_expiration_days
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
  }

  # Staging objects are copies on their way to a digest key: their old versions go at once.
  rule {
    id     = "expire-noncurrent-staging"
    status = "Enabled"
    filter {
      prefix = local.staging_prefix
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # A binary's delete marker, once its last version has expired, is nothing worth keeping.
  rule {
    id     = "remove-expired-delete-markers"
    status = "Enabled"
    filter {}
    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.shard]
}

# Optional cross-region replication of every shard bucket to a DR bucket (one per shard,
# made and versioned by the DR region's own configuration).
data "aws_iam_policy_document" "replication_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "replication" {
  count = var.replication_destination_bucket_arns == null ? 0 : 1

  name               = "${var.name}-replication"
  assume_role_policy = data.aws_iam_policy_document.replication_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "replication" {
  count = var.replication_destination_bucket_arns == null ? 0 : 1

  statement {
    sid       = "ReadSource"
    actions   = ["s3:GetReplicationConfiguration", "s3:ListBucket"]
    resources = local.bucket_arns
  }
  statement {
    sid       = "ReadSourceVersions"
    actions   = ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"]
    resources = [for b in aws_s3_bucket.shard : "${b.arn}/*"]
  }
  statement {
    sid       = "WriteDestination"
    actions   = ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"]
    resources = [for arn in values(var.replication_destination_bucket_arns) : "${arn}/*"]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [1]
    content {
      sid       = "Kms"
      actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
      resources = compact([var.kms_key_arn, var.replication_kms_key_arn])
    }
  }
}

resource "aws_iam_role_policy" "replication" {
  count = var.replication_destination_bucket_arns == null ? 0 : 1

  name   = "replicate-shards"
  role   = aws_iam_role.replication[0].id
  policy = data.aws_iam_policy_document.replication[0].json
}

resource "aws_s3_bucket_replication_configuration" "shard" {
  for_each = var.replication_destination_bucket_arns == null ? {} : aws_s3_bucket.shard

  bucket = each.value.id
  role   = aws_iam_role.replication[0].arn

  rule {
    id     = "dr-copy"
    status = "Enabled"
    filter {
      prefix = "${var.bucket_prefix_path}/"
    }
    delete_marker_replication {
      status = "Disabled"
    }
    destination {
      bucket        = var.replication_destination_bucket_arns[each.key]
      storage_class = "STANDARD_IA"
      dynamic "encryption_configuration" {
        for_each = var.replication_kms_key_arn == null ? [] : [1]
        content {
          replica_kms_key_id = var.replication_kms_key_arn
        }
      }
    }
    dynamic "source_selection_criteria" {
      for_each = var.kms_key_arn == null ? [] : [1]
      content {
        sse_kms_encrypted_objects {
          status = "Enabled"
        }
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.shard]
}

data "aws_iam_policy_document" "bucket" {
  for_each = aws_s3_bucket.shard

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:AbortMultipartUpload"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  dynamic "statement" {
    for_each = local.cdn ? [1] : []
    content {
      sid       = "CloudFrontReadsBinaries"
      effect    = "Allow"
      actions   = ["s3:GetObject"]
      resources = ["${each.value.arn}/${var.bucket_prefix_path}/*"]
      principals {
        type        = "Service"
        identifiers = ["cloudfront.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "AWS:SourceArn"
        values   = [aws_cloudfront_distribution.downloads[0].arn]
      }
    }
  }
}

resource "aws_s3_bucket_policy" "shard" {
  for_each = aws_s3_bucket.shard

  bucket     = each.value.id
  policy     = data.aws_iam_policy_document.bucket[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.shard]
}
