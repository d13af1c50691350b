CREATE TABLE "executions" (
	"id" uuid PRIMARY KEY NOT NULL,
	"tenant_id" text NOT NULL,
	"correlation_id" text NOT NULL,
	"status" text NOT NULL,
	"plan" jsonb NOT NULL,
	"options" jsonb NOT NULL,
	"final_result" json,
	"error" jsonb,
	"total_steps" integer NOT NULL,
	"successful_steps" integer DEFAULT 0 NOT NULL,
	"failed_steps" integer DEFAULT 0 NOT NULL,
	"usage" jsonb,
	"last_sequence" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "step_events" (
	"execution_id" uuid NOT NULL,
	"sequence" integer NOT NULL,
	"tenant_id" text NOT NULL,
	"correlation_id" text NOT NULL,
	"type" text NOT NULL,
	"execution_status" text NOT NULL,
	"step_index" integer,
	"step" json,
	"message" text,
	"at" timestamp with time zone NOT NULL,
	CONSTRAINT "step_events_execution_id_sequence_pk" PRIMARY KEY("execution_id","sequence")
);
--> statement-breakpoint
CREATE TABLE "step_results" (
	"execution_id" uuid NOT NULL,
	"index" integer NOT NULL,
	"tenant_id" text NOT NULL,
	"correlation_id" text NOT NULL,
	"kind" text NOT NULL,
	"status" text NOT NULL,
	"query_context" text NOT NULL,
	"entity" text,
	"reasoning" text,
	"critical" boolean NOT NULL,
	"sql" text,
	"code" text,
	"record_count" integer,
	"columns" jsonb,
	"sample" json,
	"result" json,
	"truncated" boolean DEFAULT false NOT NULL,
	"error" jsonb,
	"attempts" integer DEFAULT 0 NOT NULL,
	"usage" jsonb,
	"logs" json,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	CONSTRAINT "step_results_execution_id_index_pk" PRIMARY KEY("execution_id","index")
);
--> statement-breakpoint
CREATE TABLE "tenants" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"data_schema" text NOT NULL,
	"api_base_url" text,
	"api_openapi" jsonb,
	"api_credentials" jsonb,
	"api_allowed_methods" jsonb DEFAULT '["GET"]'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "tenants_data_schema_unique" UNIQUE("data_schema")
);
--> statement-breakpoint
ALTER TABLE "executions" ADD CONSTRAINT "executions_tenant_id_tenants_id_fk" FOREIGN KEY ("tenant_id") REFERENCES "public"."tenants"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "step_events" ADD CONSTRAINT "step_events_execution_id_executions_id_fk" FOREIGN KEY ("execution_id") REFERENCES "public"."executions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "step_results" ADD CONSTRAINT "step_results_execution_id_executions_id_fk" FOREIGN KEY ("execution_id") REFERENCES "public"."executions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "executions_tenant_created_idx" ON "executions" USING btree ("tenant_id","created_at" DESC NULLS LAST,"id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "executions_tenant_correlation_idx" ON "executions" USING btree ("tenant_id","correlation_id");--> statement-breakpoint
CREATE INDEX "executions_unfinished_idx" ON "executions" USING btree ("status") WHERE "executions"."status" in ('QUEUED', 'RUNNING');