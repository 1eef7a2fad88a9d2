# Aurora Serverless v2 (PostgreSQL): the metadata database. RDS manages the master password in
# Secrets Manager; the functions read it by reference at cold start. RDS Proxy is optional.

resource "aws_db_subnet_group" "stowage" {
  name       = var.name
  subnet_ids = var.private_subnet_ids
  tags       = local.tags
}

resource "aws_security_group" "functions" {
  name        = "${var.name}-functions"
  description = "Stowage functions: outbound to the database and AWS APIs"
  vpc_id      = var.vpc_id
  tags        = local.tags

  egress {
    description = "HTTPS to S3, Secrets Manager and CloudWatch (VPC endpoints or NAT)"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "database" {
  name        = "${var.name}-database"
  description = "Stowage metadata database: PostgreSQL from the functions and the proxy only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_egress_rule" "functions_to_database" {
  security_group_id            = aws_security_group.functions.id
  description                  = "PostgreSQL to Aurora or RDS Proxy"
  referenced_security_group_id = aws_security_group.database.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_vpc_security_group_ingress_rule" "database_from_functions" {
  security_group_id            = aws_security_group.database.id
  description                  = "PostgreSQL from the Stowage functions"
  referenced_security_group_id = aws_security_group.functions.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_vpc_security_group_ingress_rule" "database_from_proxy" {
  count = var.enable_rds_proxy ? 1 : 0

  security_group_id            = aws_security_group.database.id
  description                  = "PostgreSQL from RDS Proxy (which shares this group)"
  referenced_security_group_id = aws_security_group.database.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_rds_cluster" "stowage" {
  cluster_identifier                  = var.name
  engine                              = "aurora-postgresql"
  engine_mode                         = "provisioned"
  engine_version                      = var.aurora_engine_version
  database_name                       = var.database_name
  master_username                     = var.database_username
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = var.kms_key_arn
  db_subnet_group_name                = aws_db_subnet_group.stowage.name
  vpc_security_group_ids              = [aws_security_group.database.id]
  storage_encrypted                   = true
  kms_key_id                          = var.kms_key_arn
  iam_database_authentication_enabled = true
  deletion_protection                 = var.deletion_protection
  backup_retention_period             = var.aurora_backup_retention_days
  preferred_backup_window             = var.aurora_backup_window
  copy_tags_to_snapshot               = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-final"
  enabled_cloudwatch_logs_exports     = ["postgresql"]
  tags                                = local.tags

  serverlessv2_scaling_configuration {
    min_capacity = var.aurora_capacity.min
    max_capacity = var.aurora_capacity.max
  }
}

resource "aws_rds_cluster_instance" "stowage" {
  count = var.aurora_instance_count

  identifier                            = "${var.name}-${count.index + 1}"
  cluster_identifier                    = aws_rds_cluster.stowage.id
  engine                                = aws_rds_cluster.stowage.engine
  engine_version                        = aws_rds_cluster.stowage.engine_version
  instance_class                        = "db.serverless"
  db_subnet_group_name                  = aws_db_subnet_group.stowage.name
  auto_minor_version_upgrade            = true
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  tags                                  = local.tags
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

# RDS Proxy (optional): pools connections of many concurrent function instances.

data "aws_iam_policy_document" "proxy_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["rds.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "proxy" {
  statement {
    sid       = "ReadTheDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_rds_cluster.stowage.master_user_secret[0].secret_arn]
  }
}

resource "aws_iam_role" "proxy" {
  count = var.enable_rds_proxy ? 1 : 0

  name               = "${var.name}-rds-proxy"
  assume_role_policy = data.aws_iam_policy_document.proxy_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "proxy" {
  count = var.enable_rds_proxy ? 1 : 0

  name   = "read-database-secret"
  role   = aws_iam_role.proxy[0].id
  policy = data.aws_iam_policy_document.proxy.json
}

resource "aws_db_proxy" "stowage" {
  count = var.enable_rds_proxy ? 1 : 0

  name                   = var.name
  engine_family          = "POSTGRESQL"
  role_arn               = aws_iam_role.proxy[0].arn
  vpc_subnet_ids         = var.private_subnet_ids
  vpc_security_group_ids = [aws_security_group.database.id]
  require_tls            = true
  debug_logging          = false
  tags                   = local.tags

  auth {
    auth_scheme = "SECRETS"
    iam_auth    = "DISABLED"
    secret_arn  = aws_rds_cluster.stowage.master_user_secret[0].secret_arn
  }
}

resource "aws_db_proxy_default_target_group" "stowage" {
  count = var.enable_rds_proxy ? 1 : 0

  db_proxy_name = aws_db_proxy.stowage[0].name
  connection_pool_config {
    max_connections_percent = 90
  }
}

resource "aws_db_proxy_target" "stowage" {
  count = var.enable_rds_proxy ? 1 : 0

  db_proxy_name         = aws_db_proxy.stowage[0].name
  target_group_name     = aws_db_proxy_default_target_group.stowage[0].name
  db_cluster_identifier = aws_rds_cluster.stowage.id
}

# The admin token: generated here, kept in Secrets Manager; `stowage migrate` registers it
# (STOWAGE_ADMIN_TOKEN=secretsmanager:<arn>). The functions never read it.

resource "random_password" "admin_token" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "admin_token" {
  name_prefix = "${var.name}/admin-token-"
  description = "Stowage admin token (Authorization: Bearer …)"
  kms_key_id  = var.kms_key_arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "admin_token" {
  secret_id     = aws_secretsmanager_secret.admin_token.id
  secret_string = "stw_${random_password.admin_token.result}"
}

# Optional: a global database with this cluster as its primary, which a standby region's
# secondary cluster joins (README.md, "Failover runbook").
resource "aws_rds_global_cluster" "stowage" {
  count = var.aurora_global_cluster_identifier == null ? 0 : 1

  global_cluster_identifier    = var.aurora_global_cluster_identifier
  source_db_cluster_identifier = aws_rds_cluster.stowage.arn
  force_destroy                = false
  deletion_protection          = var.deletion_protection
}
