# The shard buckets: private (public access blocked, owner-enforced), encrypted, TLS only, with
# lifecycle rules that abort incomplete multipart uploads and expire staging objects.

resource "aws_s3_bucket" "shard" {
  for_each = local.shards

  bucket        = each.value
  force_destroy = var.force_destroy_buckets
  tags          = merge(local.tags, { "stowage:shard" = each.key })
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
    # Keys are content digests written create-only: a version history would only keep the
    # bytes of deleted binaries. Sharding's redundancy is the protection against loss.
    status = "Suspended"
  }
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
      noncurrent_days = 1
    }
  }
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
