# The container deployment (deployment = "container"): an ECS service of `stowage serve` tasks
# (infra/Dockerfile's `stowage` target) on Fargate behind an application load balancer.
#
# - Each task gets a small EBS volume of its own, managed by ECS, for its eventual queue
#   (cluster-s3-storage-v3): an upload is acknowledged once it is fsynced there, and uploaded
#   to S3 behind the answer. ECS deletes a service's task volumes when the task stops, so a
#   stopping task keeps uploading its queue for up to container.queue_drain_seconds after
#   SIGTERM (stop_timeout gives it 120 s in all); what a task lost without a SIGTERM had not
#   reached S3 (docs/durability.md, "Container deployment").
# - The load balancer's stickiness keeps a client on one task, which serves a binary still in
#   its queue from its own disk; its health check, and the container's, ask readiness.
# - Autoscaling keeps between min_tasks and max_tasks on CPU. The primary task runs garbage
#   collection (with the trash's retention) and balancing on var.maintenance's intervals.
# - A CloudWatch agent beside each task scrapes its metrics on a loopback port and publishes
#   the queue's figures to the Stowage namespace, where the queue-age alarm watches them.

locals {
  container_port = 8081
  data_dir       = "/var/lib/stowage"
  c              = local.container ? var.container : null

  container_environment = { for k, v in merge(
    local.environment,
    {
      STOWAGE_CONFIG_TOML = local.container_config_toml
      STOWAGE_LISTEN      = "0.0.0.0:${local.container_port}"
      STOWAGE_DATA_DIR    = local.data_dir
    },
  ) : k => v if v != null }

  agent_config = jsonencode({
    logs = {
      force_flush_interval = 5
      metrics_collected = {
        prometheus = {
          log_group_name         = "/ecs/${var.name}/metrics"
          prometheus_config_path = "env:PROMETHEUS_CONFIG_CONTENT"
          emf_processor = {
            metric_declaration_dedup = true
            metric_namespace         = "Stowage"
            metric_declaration = [{
              source_labels    = ["job"]
              label_matcher    = "^stowage$"
              dimensions       = [["service"]]
              metric_selectors = ["^stowage_queue_oldest_age_seconds$", "^stowage_queue_depth$", "^stowage_queue_retrying$", "^stowage_queue_bytes$"]
            }]
          }
        }
      }
    }
  })
  prometheus_config = yamlencode({
    global = { scrape_interval = "1m", scrape_timeout = "10s" }
    scrape_configs = [{
      job_name       = "stowage"
      metrics_path   = "/metrics"
      static_configs = [{ targets = ["127.0.0.1:${local.metrics_port}"], labels = { service = var.name } }]
    }]
  })
}

resource "aws_ecs_cluster" "stowage" {
  count = local.container ? 1 : 0

  name = var.name
  tags = local.tags

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "container" {
  count = local.container ? 1 : 0

  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

# Where the agent writes the metrics it publishes (embedded metric format).
resource "aws_cloudwatch_log_group" "container_metrics" {
  count = local.container ? 1 : 0

  name              = "/ecs/${var.name}/metrics"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

# What ECS itself needs to start a task: pull the images, write the logs.
resource "aws_iam_role" "task_execution" {
  count = local.container ? 1 : 0

  name               = "${var.name}-task-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "task_execution" {
  count = local.container ? 1 : 0

  role       = aws_iam_role.task_execution[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# What Stowage (and the agent beside it) may do: everything the three functions and the
# maintenance do with the buckets, the database password, the agent's metrics log.
resource "aws_iam_role" "task" {
  count = local.container ? 1 : 0

  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "task" {
  count = local.container ? 1 : 0

  statement {
    sid       = "Binaries"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = local.binary_arns
  }

  statement {
    sid       = "ListBinaries"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = local.bucket_arns
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.bucket_prefix_path}/*"]
    }
  }

  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = compact([aws_rds_cluster.stowage.master_user_secret[0].secret_arn, var.cloudfront_private_key_secret_arn])
  }

  statement {
    sid       = "AgentMetrics"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.container_metrics[0].arn}:*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [1]
    content {
      sid       = "Kms"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  count = local.container ? 1 : 0

  name   = "stowage-task"
  role   = aws_iam_role.task[0].id
  policy = data.aws_iam_policy_document.task[0].json
}

# What ECS needs to create, attach and delete each task's EBS volume.
data "aws_iam_policy_document" "ecs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ecs_volumes" {
  count = local.container ? 1 : 0

  name               = "${var.name}-ecs-volumes"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "ecs_volumes" {
  count = local.container ? 1 : 0

  role       = aws_iam_role.ecs_volumes[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSInfrastructureRolePolicyForVolumes"
}

resource "aws_ecs_task_definition" "stowage" {
  count = local.container ? 1 : 0

  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = local.c.cpu
  memory                   = local.c.memory_mb
  execution_role_arn       = aws_iam_role.task_execution[0].arn
  task_role_arn            = aws_iam_role.task[0].arn
  tags                     = local.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.lambda_architecture == "arm64" ? "ARM64" : "X86_64"
  }

  # The queue disk: an EBS volume per task, configured by the service (volume_configuration).
  volume {
    name                = "queue"
    configure_at_launch = true
  }

  container_definitions = jsonencode([
    {
      # A new volume's file system belongs to root; the image runs as nonroot (65532).
      name                   = "prepare-disk"
      image                  = local.c.init_image
      essential              = false
      user                   = "0"
      command                = ["chown", "-R", "65532:65532", local.data_dir]
      readonlyRootFilesystem = true
      mountPoints            = [{ sourceVolume = "queue", containerPath = local.data_dir }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.container[0].name
          awslogs-region        = local.region
          awslogs-stream-prefix = "prepare-disk"
        }
      }
    },
    {
      name                   = "stowage"
      image                  = local.c.image
      essential              = true
      command                = ["serve"]
      readonlyRootFilesystem = true
      portMappings           = [{ containerPort = local.container_port, protocol = "tcp" }]
      environment            = [for k in sort(keys(local.container_environment)) : { name = k, value = local.container_environment[k] }]
      mountPoints            = [{ sourceVolume = "queue", containerPath = local.data_dir }]
      dependsOn              = [{ containerName = "prepare-disk", condition = "SUCCESS" }]
      # SIGTERM, then up to 120 s (Fargate's most) to finish requests and upload the queue.
      stopTimeout = 120
      healthCheck = {
        command     = ["CMD", "/usr/local/bin/stowage", "healthcheck"]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.container[0].name
          awslogs-region        = local.region
          awslogs-stream-prefix = "stowage"
        }
      }
    },
    {
      name                   = "cloudwatch-agent"
      image                  = local.c.agent_image
      essential              = false
      readonlyRootFilesystem = false
      environment = [
        { name = "CW_CONFIG_CONTENT", value = local.agent_config },
        { name = "PROMETHEUS_CONFIG_CONTENT", value = local.prometheus_config },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.container[0].name
          awslogs-region        = local.region
          awslogs-stream-prefix = "cloudwatch-agent"
        }
      }
    },
  ])
}

resource "aws_security_group" "load_balancer" {
  count = local.container ? 1 : 0

  name        = "${var.name}-load-balancer"
  description = "Stowage load balancer: HTTPS (and HTTP, redirected) from the clients; to the tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "load_balancer_https" {
  for_each = local.container ? toset(local.c.allowed_cidrs) : toset([])

  security_group_id = aws_security_group.load_balancer[0].id
  description       = "HTTPS from clients"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "load_balancer_http" {
  for_each = local.container ? toset(local.c.allowed_cidrs) : toset([])

  security_group_id = aws_security_group.load_balancer[0].id
  description       = "HTTP from clients, redirected to HTTPS"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_egress_rule" "load_balancer_to_tasks" {
  count = local.container ? 1 : 0

  security_group_id            = aws_security_group.load_balancer[0].id
  description                  = "To the Stowage tasks"
  referenced_security_group_id = aws_security_group.functions.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
}

# The tasks share the functions' group (HTTPS to AWS, PostgreSQL to the database), and take
# requests from the load balancer.
resource "aws_vpc_security_group_ingress_rule" "tasks_from_load_balancer" {
  count = local.container ? 1 : 0

  security_group_id            = aws_security_group.functions.id
  description                  = "Requests from the load balancer"
  referenced_security_group_id = aws_security_group.load_balancer[0].id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
}

resource "aws_lb" "stowage" {
  count = local.container ? 1 : 0

  name                       = var.name
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = local.c.public_subnet_ids
  security_groups            = [aws_security_group.load_balancer[0].id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  # A large upload may go minutes without a response byte.
  idle_timeout = 600
  tags         = local.tags

  dynamic "access_logs" {
    for_each = local.c.access_logs_bucket == null ? [] : [local.c.access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }
}

resource "aws_lb_target_group" "stowage" {
  count = local.container ? 1 : 0

  name        = var.name
  port        = local.container_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  # As long as a stopping task may take to finish its requests.
  deregistration_delay = 120
  tags                 = local.tags

  health_check {
    path                = "/api/v1/system/readiness"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  # A client stays on one task, which serves what its own queue still holds.
  stickiness {
    enabled         = true
    type            = "lb_cookie"
    cookie_duration = 3600
  }
}

resource "aws_lb_listener" "https" {
  count = local.container ? 1 : 0

  load_balancer_arn = aws_lb.stowage[0].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = local.c.certificate_arn
  tags              = local.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.stowage[0].arn
  }
}

resource "aws_lb_listener" "http" {
  count = local.container ? 1 : 0

  load_balancer_arn = aws_lb.stowage[0].arn
  port              = 80
  protocol          = "HTTP"
  tags              = local.tags

  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}

resource "aws_ecs_service" "stowage" {
  count = local.container ? 1 : 0

  name                               = var.name
  cluster                            = aws_ecs_cluster.stowage[0].id
  task_definition                    = aws_ecs_task_definition.stowage[0].arn
  desired_count                      = local.c.min_tasks
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  health_check_grace_period_seconds  = 60
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true
  tags                               = local.tags

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.functions.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.stowage[0].arn
    container_name   = "stowage"
    container_port   = local.container_port
  }

  # Each task's queue disk.
  volume_configuration {
    name = "queue"
    managed_ebs_volume {
      role_arn         = aws_iam_role.ecs_volumes[0].arn
      size_in_gb       = local.c.queue_volume_gb
      volume_type      = "gp3"
      file_system_type = "ext4"
      encrypted        = true
      kms_key_id       = var.kms_key_arn
      tag_specifications {
        resource_type  = "volume"
        propagate_tags = "SERVICE"
      }
    }
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    # Autoscaling sets the count.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https, aws_iam_role_policy_attachment.ecs_volumes]
}

resource "aws_appautoscaling_target" "stowage" {
  count = local.container ? 1 : 0

  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.stowage[0].name}/${aws_ecs_service.stowage[0].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = local.c.min_tasks
  max_capacity       = local.c.max_tasks
}

resource "aws_appautoscaling_policy" "cpu" {
  count = local.container ? 1 : 0

  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.stowage[0].service_namespace
  resource_id        = aws_appautoscaling_target.stowage[0].resource_id
  scalable_dimension = aws_appautoscaling_target.stowage[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value = local.c.cpu_target_percent
    # Scale in slowly: a task that stops hands its queue to S3 first.
    scale_in_cooldown  = 600
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
