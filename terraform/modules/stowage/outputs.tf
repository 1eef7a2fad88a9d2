output "api_url" {
  description = "Base URL of the Stowage API: the HTTP API's default stage (Lambda), or the load balancer (container; point a DNS name on its certificate at it)."
  value       = local.lambda ? aws_apigatewayv2_api.stowage[0].api_endpoint : "https://${aws_lb.stowage[0].dns_name}"
}

output "cloudfront_domain_name" {
  description = "Domain of the download distribution, null without CloudFront."
  value       = local.cdn ? aws_cloudfront_distribution.downloads[0].domain_name : null
}

output "bucket_names" {
  description = "The shard buckets, by mount id."
  value       = { for id, b in aws_s3_bucket.shard : id => b.bucket }
}

output "database_endpoint" {
  description = "Where the functions reach PostgreSQL (the proxy when enabled)."
  value       = local.database_host
}

output "database_secret_arn" {
  description = "Secrets Manager secret of the database master user (RDS-managed, JSON with username and password)."
  value       = aws_rds_cluster.stowage.master_user_secret[0].secret_arn
}

output "admin_token_secret_arn" {
  description = "Secrets Manager secret of the admin token, for `stowage migrate` (STOWAGE_ADMIN_TOKEN) and for clients."
  value       = aws_secretsmanager_secret.admin_token.arn
}

output "function_names" {
  description = "The Lambda functions, by part."
  value       = { for k, f in aws_lambda_function.function : k => f.function_name }
}

output "log_groups" {
  description = "Log groups of the functions, the API and maintenance (Lambda), or of the tasks (container)."
  value = merge(
    { for k, g in aws_cloudwatch_log_group.function : k => g.name },
    { for g in aws_cloudwatch_log_group.api : "api" => g.name },
    { for g in aws_cloudwatch_log_group.maintenance : "maintenance" => g.name },
    { for g in aws_cloudwatch_log_group.container : "container" => g.name },
  )
}

locals {
  migrate_environment = {
    STOWAGE_DATABASE_URL      = local.environment["STOWAGE_DATABASE_URL"]
    STOWAGE_DATABASE_PASSWORD = local.environment["STOWAGE_DATABASE_PASSWORD"]
    STOWAGE_ADMIN_TOKEN       = "secretsmanager:${aws_secretsmanager_secret.admin_token.arn}"
  }
}

output "migrate_environment" {
  description = "The environment `stowage migrate` needs (run it where the database is reachable)."
  value       = local.migrate_environment
}

output "migrate_exports" {
  description = "migrate_environment as shell lines, quoted: eval \"$(terraform output -raw migrate_exports)\"."
  value       = join("\n", [for name, value in local.migrate_environment : "export ${name}='${replace(value, "'", "'\\''")}'"])
}

output "ecs_service" {
  description = "The container deployment's ECS cluster and service names (null for Lambda)."
  value       = local.container ? { cluster = aws_ecs_cluster.stowage[0].name, service = aws_ecs_service.stowage[0].name } : null
}
