# CloudFront in front of the binaries for signed downloads: origin access control (the bucket
# stays private), a trusted key group whose private key the download function signs with, and
# the response-* query strings forwarded so S3 sets the file name and type.

resource "aws_cloudfront_origin_access_control" "binaries" {
  count = local.cdn ? 1 : 0

  name                              = "${var.name}-binaries"
  description                       = "Stowage binaries"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

resource "aws_cloudfront_public_key" "downloads" {
  count = local.cdn ? 1 : 0

  name        = "${var.name}-downloads"
  comment     = "Checks Stowage's signed download URLs"
  encoded_key = var.cloudfront_public_key_pem
}

resource "aws_cloudfront_key_group" "downloads" {
  count = local.cdn ? 1 : 0

  name    = "${var.name}-downloads"
  items   = [aws_cloudfront_public_key.downloads[0].id]
  comment = "Stowage download signers"
}

resource "aws_cloudfront_cache_policy" "binaries" {
  count = local.cdn ? 1 : 0

  name        = "${var.name}-binaries"
  comment     = "Content-addressed binaries: cache long, vary by the response-* overrides"
  default_ttl = 86400
  max_ttl     = 31536000
  min_ttl     = 0

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_brotli = false
    enable_accept_encoding_gzip   = false
    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "whitelist"
      query_strings {
        items = ["response-content-disposition", "response-content-type"]
      }
    }
  }
}

resource "aws_cloudfront_response_headers_policy" "binaries" {
  count = local.cdn ? 1 : 0

  name    = "${var.name}-binaries"
  comment = "Security headers for downloads"

  security_headers_config {
    content_type_options {
      override = true
    }
    frame_options {
      frame_option = "DENY"
      override     = true
    }
    referrer_policy {
      referrer_policy = "no-referrer"
      override        = true
    }
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      preload                    = true
      override                   = true
    }
  }
}

resource "aws_cloudfront_distribution" "downloads" {
  count = local.cdn ? 1 : 0

  enabled         = true
  comment         = "Stowage signed downloads"
  price_class     = var.cloudfront_price_class
  is_ipv6_enabled = true
  http_version    = "http2and3"
  tags            = local.tags

  origin {
    origin_id                = "binaries"
    domain_name              = values(aws_s3_bucket.shard)[0].bucket_regional_domain_name
    origin_access_control_id = aws_cloudfront_origin_access_control.binaries[0].id
  }

  default_cache_behavior {
    target_origin_id           = "binaries"
    viewer_protocol_policy     = "https-only"
    allowed_methods            = ["GET", "HEAD"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = false
    cache_policy_id            = aws_cloudfront_cache_policy.binaries[0].id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.binaries[0].id
    trusted_key_groups         = [aws_cloudfront_key_group.downloads[0].id]
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = true
  }
}
